//! Invariants of template.yaml that a release reviewer would otherwise check by eye. The YAML
//! loader drops CloudFormation tags (`!Ref X` reads as "X"), which is all these checks need.

use std::collections::BTreeSet;

use yaml_rust2::{Yaml, YamlLoader};

fn template() -> Yaml {
    let text = std::fs::read_to_string(devkit::repo_root().join("template.yaml")).unwrap();
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

fn resources(doc: &Yaml) -> Vec<(String, Yaml)> {
    doc["Resources"]
        .as_hash()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_string(), v.clone()))
        .collect()
}

fn of_type(doc: &Yaml, kind: &str) -> Vec<(String, Yaml)> {
    resources(doc)
        .into_iter()
        .filter(|(_, r)| r["Type"].as_str() == Some(kind))
        .collect()
}

fn functions(doc: &Yaml) -> Vec<(String, Yaml)> {
    of_type(doc, "AWS::Serverless::Function")
}

#[test]
fn api_routes_equal_the_routers_routes() {
    let doc = template();
    let tables: [(&str, &[app_auth::RouteRule]); 3] = [
        ("functions/dashboards", dashboards::ROUTES),
        ("functions/ga", ga::ROUTES),
        ("functions/analytics", analytics::ROUTES),
    ];
    for (code_uri, table) in tables {
        let (name, function) = functions(&doc)
            .into_iter()
            .find(|(_, f)| f["Properties"]["CodeUri"].as_str() == Some(code_uri))
            .unwrap_or_else(|| panic!("no function with CodeUri {code_uri}"));
        let in_template: BTreeSet<(String, String)> = function["Properties"]["Events"]
            .as_hash()
            .unwrap()
            .values()
            .filter(|e| e["Type"].as_str() == Some("Api"))
            .map(|e| {
                (
                    e["Properties"]["Method"].as_str().unwrap().to_uppercase(),
                    e["Properties"]["Path"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let in_code: BTreeSet<(String, String)> = table
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        assert_eq!(in_template, in_code, "{name}");
    }
}

#[test]
fn every_function_is_arm64_cargo_lambda_with_a_retained_log_group_and_alarms() {
    let doc = template();
    let all = resources(&doc);
    let globals = &doc["Globals"]["Function"];
    assert_eq!(globals["Runtime"].as_str(), Some("provided.al2023"));
    assert_eq!(globals["Architectures"][0].as_str(), Some("arm64"));
    for (name, function) in functions(&doc) {
        assert_eq!(
            function["Metadata"]["BuildMethod"].as_str(),
            Some("rust-cargolambda"),
            "{name}"
        );
        let props = &function["Properties"];
        assert_eq!(
            props["LoggingConfig"]["LogFormat"].as_str(),
            Some("JSON"),
            "{name}"
        );
        let group = props["LoggingConfig"]["LogGroup"].as_str().unwrap();
        let (_, log_group) = all.iter().find(|(n, _)| n == group).unwrap();
        assert_eq!(log_group["Type"].as_str(), Some("AWS::Logs::LogGroup"));
        assert!(
            !log_group["Properties"]["RetentionInDays"].is_badvalue(),
            "{name}"
        );
        let alarmed: BTreeSet<String> = of_type(&doc, "AWS::CloudWatch::Alarm")
            .into_iter()
            .filter(|(_, a)| {
                a["Properties"]["Dimensions"]
                    .as_vec()
                    .is_some_and(|d| d.iter().any(|d| d["Value"].as_str() == Some(&name)))
            })
            .map(|(_, a)| a["Properties"]["MetricName"].as_str().unwrap().to_string())
            .collect();
        for metric in ["Errors", "Throttles", "Duration"] {
            assert!(alarmed.contains(metric), "{name} has no {metric} alarm");
        }
    }
}

#[test]
fn every_alarm_notifies_both_ways_and_names_an_existing_runbook() {
    let doc = template();
    let alarms = of_type(&doc, "AWS::CloudWatch::Alarm");
    assert!(alarms.len() >= 20);
    for (name, alarm) in alarms {
        let props = &alarm["Properties"];
        assert_eq!(
            props["AlarmActions"][0].as_str(),
            Some("AlarmTopic"),
            "{name}"
        );
        assert_eq!(props["OKActions"][0].as_str(), Some("AlarmTopic"), "{name}");
        let description = props["AlarmDescription"].as_str().unwrap();
        let page = description
            .split("${RunbookBaseUrl}/")
            .nth(1)
            .unwrap_or_else(|| panic!("{name}: no runbook link"));
        let path = devkit::repo_root().join("docs/runbooks").join(page);
        assert!(path.exists(), "{name}: {} does not exist", path.display());
    }
}

#[test]
fn data_is_encrypted_retained_and_recoverable() {
    let doc = template();
    let (_, table) = of_type(&doc, "AWS::DynamoDB::Table").remove(0);
    let props = &table["Properties"];
    assert_eq!(table["DeletionPolicy"].as_str(), Some("Retain"));
    assert_eq!(table["UpdateReplacePolicy"].as_str(), Some("Retain"));
    assert_eq!(props["DeletionProtectionEnabled"].as_bool(), Some(true));
    assert_eq!(
        props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool(),
        Some(true)
    );
    assert_eq!(
        props["SSESpecification"]["KMSMasterKeyId"].as_str(),
        Some("DataKey")
    );
    assert_eq!(
        props["TimeToLiveSpecification"]["AttributeName"].as_str(),
        Some(app_storage::attr::TTL)
    );

    let (_, key) = of_type(&doc, "AWS::KMS::Key").remove(0);
    assert_eq!(key["Properties"]["EnableKeyRotation"].as_bool(), Some(true));

    let (_, bucket) = of_type(&doc, "AWS::S3::Bucket").remove(0);
    let b = &bucket["Properties"];
    for flag in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(
            b["PublicAccessBlockConfiguration"][flag].as_bool(),
            Some(true),
            "{flag}"
        );
    }
    assert_eq!(
        b["VersioningConfiguration"]["Status"].as_str(),
        Some("Enabled")
    );
    let sse = &b["BucketEncryption"]["ServerSideEncryptionConfiguration"][0];
    assert_eq!(sse["BucketKeyEnabled"].as_bool(), Some(true));
    assert_eq!(
        sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"].as_str(),
        Some("aws:kms")
    );

    let selection = &of_type(&doc, "AWS::Backup::BackupSelection")[0].1;
    let selected: Vec<&str> = selection["Properties"]["BackupSelection"]["Resources"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(selected.contains(&"Table.Arn") && selected.contains(&"ReportsBucket.Arn"));
    assert_eq!(of_type(&doc, "AWS::Backup::RestoreTestingPlan").len(), 1);
    for (name, group) in of_type(&doc, "AWS::Logs::LogGroup") {
        assert!(
            !group["Properties"]["RetentionInDays"].is_badvalue(),
            "{name}"
        );
        assert_eq!(
            group["Properties"]["KmsKeyId"].as_str(),
            Some("DataKey.Arn"),
            "{name}"
        );
    }
}

/// IAM statements with `Resource: "*"`, and why each is unavoidable.
const STAR_RESOURCE_ALLOWED: &[(&str, &str)] = &[(
    "XRay",
    "X-Ray PutTraceSegments/PutTelemetryRecords support no resource-level permissions",
)];

#[test]
fn no_function_policy_uses_a_star_resource_without_a_listed_reason() {
    let doc = template();
    for (name, function) in functions(&doc) {
        for policy in function["Properties"]["Policies"].as_vec().unwrap() {
            for statement in policy["Statement"].as_vec().unwrap() {
                let sid = statement["Sid"].as_str().unwrap_or("(no sid)");
                let resources = match &statement["Resource"] {
                    Yaml::Array(items) => items.clone(),
                    other => vec![other.clone()],
                };
                if resources.iter().any(|r| r.as_str() == Some("*")) {
                    assert!(
                        STAR_RESOURCE_ALLOWED.iter().any(|(s, _)| *s == sid),
                        "{name}: statement {sid} uses Resource * without a listed reason"
                    );
                }
                let actions = match &statement["Action"] {
                    Yaml::Array(items) => items.clone(),
                    other => vec![other.clone()],
                };
                for action in actions {
                    let action = action.as_str().unwrap();
                    assert!(!action.ends_with(":*") && action != "*", "{name}: {action}");
                }
            }
        }
    }
}

#[test]
fn environments_carry_only_names_and_arns() {
    let doc = template();
    let allowed = [
        "STAGE",
        "CONFIG_SECRET_ID",
        "TABLE_NAME",
        "KMS_KEY_ID",
        "REPORTS_BUCKET",
        "AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH",
    ];
    let mut scopes = vec![doc["Globals"]["Function"]["Environment"]["Variables"].clone()];
    scopes.extend(
        functions(&doc)
            .into_iter()
            .map(|(_, f)| f["Properties"]["Environment"]["Variables"].clone()),
    );
    for variables in scopes {
        if let Some(map) = variables.as_hash() {
            for key in map.keys() {
                let key = key.as_str().unwrap();
                assert!(
                    allowed.contains(&key),
                    "unexpected environment variable {key}"
                );
            }
        }
    }
}

#[test]
fn the_firewall_guards_the_stage() {
    let doc = template();
    let (_, acl) = of_type(&doc, "AWS::WAFv2::WebACL").remove(0);
    let rules: Vec<String> = acl["Properties"]["Rules"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|r| r["Name"].as_str().unwrap().to_string())
        .collect();
    for expected in [
        "AWSManagedRulesCommonRuleSet",
        "AWSManagedRulesKnownBadInputsRuleSet",
        "AWSManagedRulesAmazonIpReputationList",
        "RateLimitPerIp",
        "BodyOver1MiB",
    ] {
        assert!(
            rules.iter().any(|r| r == expected),
            "missing WAF rule {expected}"
        );
    }
    assert_eq!(of_type(&doc, "AWS::WAFv2::WebACLAssociation").len(), 1);
    assert_eq!(of_type(&doc, "AWS::WAFv2::LoggingConfiguration").len(), 1);
}

#[test]
fn the_waf_body_size_regex_draws_the_line_at_one_mib() {
    let doc = template();
    let (_, acl) = of_type(&doc, "AWS::WAFv2::WebACL").remove(0);
    let rule = acl["Properties"]["Rules"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|r| r["Name"].as_str() == Some("BodyOver1MiB"))
        .unwrap()
        .clone();
    let pattern = rule["Statement"]["RegexMatchStatement"]["RegexString"]
        .as_str()
        .unwrap();
    let regex = regex::Regex::new(pattern).unwrap();
    for n in [0u64, 1, 999_999, 1_000_000, 1_048_575, 1_048_576] {
        assert!(!regex.is_match(&n.to_string()), "{n} must pass");
    }
    for n in [
        1_048_577u64,
        1_048_580,
        1_048_600,
        1_049_000,
        1_050_000,
        1_100_000,
        2_000_000,
        9_999_999,
        10_000_000,
        123_456_789,
    ] {
        assert!(regex.is_match(&n.to_string()), "{n} must be blocked");
    }
}
