//! Bearer token verification against the issuer's JWKS (RFC 8725).
//!
//! Order of checks, cheapest and most hostile first: size → header shape (alg in the asymmetric
//! allowlist, no `crit`, a `kid`) → key lookup (cached JWKS, rate-limited refetch) → key/alg match →
//! signature and registered claims (jsonwebtoken) → claim types → tenant and roles.
//! `jku`, `x5u`, `jwk` and `x5c` headers are never read: keys come only from the configured JWKS.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use app_config::OidcConfig;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use crate::{Rejection, Role};

/// Tokens above this size are refused before any parsing (RFC 8725 §3.x: bound the work).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

#[derive(Clone)]
struct CachedKey {
    key: DecodingKey,
    /// The JWK's own `alg`, when it declares one.
    alg: Option<Algorithm>,
    family: KeyFamily,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyFamily {
    Rsa,
    Ec,
    Okp,
}

fn family_of(alg: Algorithm) -> Option<KeyFamily> {
    use Algorithm::*;
    match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Some(KeyFamily::Rsa),
        ES256 | ES384 => Some(KeyFamily::Ec),
        EdDSA => Some(KeyFamily::Okp),
        _ => None,
    }
}

#[derive(Default)]
struct JwksState {
    /// The JWKS URL the keys came from (config or discovery).
    source: Option<String>,
    keys: HashMap<String, CachedKey>,
    last_fetch: Option<Instant>,
}

/// What a verified token says about its bearer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedClaims {
    pub subject: String,
    pub tenant: Option<String>,
    pub role: Option<Role>,
}

/// The registered claims, strictly typed: a claim of the wrong JSON type fails deserialisation.
#[derive(Deserialize)]
struct RegisteredClaims {
    sub: String,
    #[allow(dead_code)]
    exp: u64,
    #[serde(default)]
    #[allow(dead_code)]
    nbf: Option<u64>,
    #[serde(default)]
    #[allow(dead_code)]
    iat: Option<u64>,
    #[allow(dead_code)]
    iss: String,
    #[allow(dead_code)]
    aud: Audience,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    #[allow(dead_code)]
    One(String),
    #[allow(dead_code)]
    Many(Vec<String>),
}

/// Verifies user tokens. One per container; the JWKS cache lives as long as it does.
pub struct JwtVerifier {
    http: reqwest::Client,
    state: RwLock<JwksState>,
    fetching: Mutex<()>,
}

impl Default for JwtVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl JwtVerifier {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            http,
            state: RwLock::new(JwksState::default()),
            fetching: Mutex::new(()),
        }
    }

    /// Verifies `token` under `config`. Never logs the token.
    pub async fn verify(
        &self,
        token: &str,
        config: &OidcConfig,
    ) -> Result<VerifiedClaims, Rejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Rejection::TooLarge);
        }
        let (alg, kid) = check_header(token, &config.algorithms)?;
        let key = self.key_for(&kid, config).await?;
        if family_of(alg) != Some(key.family) || key.alg.is_some_and(|a| a != alg) {
            return Err(Rejection::KeyAlgorithmMismatch);
        }

        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.set_issuer(&[config.issuer.as_str()]);
        validation.set_audience(&[config.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = config.leeway_secs.min(60);
        validation.validate_nbf = true;
        validation.validate_exp = true;

        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key.key,
            &validation,
        )
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => Rejection::BadSignature,
            ErrorKind::ExpiredSignature => Rejection::Expired,
            ErrorKind::ImmatureSignature => Rejection::NotYetValid,
            ErrorKind::InvalidIssuer => Rejection::WrongIssuer,
            ErrorKind::InvalidAudience => Rejection::WrongAudience,
            // jsonwebtoken reports a claim of the wrong type (`"exp": "123"`) as missing; tell
            // the two apart for the reason code (the token is rejected either way).
            ErrorKind::MissingRequiredClaim(claim) if payload_has(token, claim) => {
                Rejection::InvalidClaim
            }
            ErrorKind::MissingRequiredClaim(_) => Rejection::MissingClaim,
            ErrorKind::InvalidClaimFormat(_) => Rejection::InvalidClaim,
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                Rejection::AlgorithmNotAllowed
            }
            _ => Rejection::Malformed,
        })?;
        let claims = serde_json::Value::Object(data.claims);
        let registered: RegisteredClaims =
            serde_json::from_value(claims.clone()).map_err(|_| Rejection::InvalidClaim)?;
        if registered.sub.is_empty() {
            return Err(Rejection::MissingClaim);
        }
        let tenant = match claims.get(&config.tenant_claim) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(t)) if is_valid_tenant(t) => Some(t.clone()),
            Some(_) => return Err(Rejection::InvalidClaim),
        };
        let role = highest_role(claims.get(&config.roles_claim))?;
        Ok(VerifiedClaims {
            subject: registered.sub,
            tenant,
            role,
        })
    }

    /// The key for `kid`: from the cache, else after one refetch if the last fetch is older than
    /// the configured interval. A JWKS endpoint that is down leaves cached keys in service.
    async fn key_for(&self, kid: &str, config: &OidcConfig) -> Result<CachedKey, Rejection> {
        {
            let state = self.state.read().await;
            if let Some(key) = state.keys.get(kid) {
                return Ok(key.clone());
            }
        }
        let interval = Duration::from_secs(config.jwks_refetch_interval_secs);
        let _guard = self.fetching.lock().await;
        // Another request may have fetched while we waited.
        {
            let state = self.state.read().await;
            if let Some(key) = state.keys.get(kid) {
                return Ok(key.clone());
            }
            if state.last_fetch.is_some_and(|at| at.elapsed() < interval) {
                return Err(Rejection::UnknownKid);
            }
        }
        let fetched = self.fetch(config).await;
        let mut state = self.state.write().await;
        state.last_fetch = Some(Instant::now());
        match fetched {
            Ok((source, keys)) => {
                state.source = Some(source);
                state.keys = keys;
            }
            Err(reason) => {
                tracing::warn!(target: "auth", %reason, "JWKS fetch failed; keeping cached keys");
                if state.keys.is_empty() {
                    return Err(Rejection::JwksUnavailable);
                }
            }
        }
        state.keys.get(kid).cloned().ok_or(Rejection::UnknownKid)
    }

    async fn fetch(
        &self,
        config: &OidcConfig,
    ) -> Result<(String, HashMap<String, CachedKey>), String> {
        let url = match &config.jwks_url {
            Some(url) => url.clone(),
            None => self.discover(&config.issuer).await?,
        };
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET JWKS: {}", e.without_url()))?;
        if !response.status().is_success() {
            return Err(format!("GET JWKS: status {}", response.status()));
        }
        #[derive(Deserialize)]
        struct RawSet {
            keys: Vec<serde_json::Value>,
        }
        let set: RawSet = response
            .json()
            .await
            .map_err(|e| format!("JWKS body: {}", e.without_url()))?;
        let mut keys = HashMap::new();
        for raw in set.keys {
            // A key we cannot use (unknown kty, `use: enc`, no kid) is skipped, not fatal.
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw) else {
                continue;
            };
            if let Some(cached) = usable_key(&jwk)
                && let Some(kid) = jwk.common.key_id.clone()
            {
                keys.insert(kid, cached);
            }
        }
        Ok((url, keys))
    }

    async fn discover(&self, issuer: &str) -> Result<String, String> {
        #[derive(Deserialize)]
        struct Discovery {
            jwks_uri: String,
        }
        if let Some(source) = &self.state.read().await.source {
            return Ok(source.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("discovery: {}", e.without_url()))?
            .json()
            .await
            .map_err(|e| format!("discovery body: {}", e.without_url()))?;
        Ok(discovery.jwks_uri)
    }
}

fn usable_key(jwk: &Jwk) -> Option<CachedKey> {
    if matches!(
        jwk.common.public_key_use,
        Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
    ) {
        return None;
    }
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyFamily::Rsa,
        AlgorithmParameters::EllipticCurve(_) => KeyFamily::Ec,
        AlgorithmParameters::OctetKeyPair(_) => KeyFamily::Okp,
        // Symmetric or unknown keys never verify user tokens.
        _ => return None,
    };
    let alg = match jwk.common.key_algorithm {
        Some(ka) => Some(Algorithm::from_str(&ka.to_string()).ok()?),
        None => None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(CachedKey { key, alg, family })
}

/// Header checks that need no key: returns (alg, kid).
fn check_header(token: &str, allowed: &[String]) -> Result<(Algorithm, String), Rejection> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Rejection::Malformed);
    };
    let header_bytes = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| Rejection::Malformed)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header_bytes).map_err(|_| Rejection::Malformed)?;
    // Exact, case-sensitive match against the allowlist: `none`, `NoNe` and `HS256` all fail here.
    let alg_name = header
        .get("alg")
        .and_then(|a| a.as_str())
        .ok_or(Rejection::AlgorithmNotAllowed)?;
    if !allowed.iter().any(|a| a == alg_name) {
        return Err(Rejection::AlgorithmNotAllowed);
    }
    let alg = Algorithm::from_str(alg_name).map_err(|_| Rejection::AlgorithmNotAllowed)?;
    if family_of(alg).is_none() {
        return Err(Rejection::AlgorithmNotAllowed);
    }
    // We implement no JWS extension, so any `crit` means "you cannot process this token".
    if header.contains_key("crit") {
        return Err(Rejection::CritUnsupported);
    }
    let kid = header
        .get("kid")
        .and_then(|k| k.as_str())
        .filter(|k| !k.is_empty() && k.len() <= 256)
        .ok_or(Rejection::MissingKid)?;
    Ok((alg, kid.to_string()))
}

/// Whether the (unverified) payload has `claim` at all. Used only to pick a reason code.
fn payload_has(token: &str, claim: &str) -> bool {
    token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|p| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&p).ok())
        .is_some_and(|claims| claims.contains_key(claim))
}

/// Tenant ids become key prefixes: keep them short and plain.
fn is_valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 64
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Roles come as an array of strings (or one string); unknown names are ignored.
fn highest_role(value: Option<&serde_json::Value>) -> Result<Option<Role>, Rejection> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => {
            Ok(s.split_whitespace().filter_map(Role::parse).max())
        }
        Some(serde_json::Value::Array(items)) => {
            let mut best = None;
            for item in items {
                let name = item.as_str().ok_or(Rejection::InvalidClaim)?;
                best = best.max(Role::parse(name));
            }
            Ok(best)
        }
        Some(_) => Err(Rejection::InvalidClaim),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_with_header(header: &str) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode("{}"),
            "sig"
        )
    }

    #[test]
    fn header_checks_reject_before_any_key_lookup() {
        let allowed = vec!["RS256".to_string(), "ES256".to_string()];
        let cases = [
            (
                r#"{"alg":"none","kid":"k"}"#,
                Rejection::AlgorithmNotAllowed,
            ),
            (
                r#"{"alg":"NoNe","kid":"k"}"#,
                Rejection::AlgorithmNotAllowed,
            ),
            (
                r#"{"alg":"HS256","kid":"k"}"#,
                Rejection::AlgorithmNotAllowed,
            ),
            (
                r#"{"alg":"RS512","kid":"k"}"#,
                Rejection::AlgorithmNotAllowed,
            ),
            (r#"{"kid":"k"}"#, Rejection::AlgorithmNotAllowed),
            (
                r#"{"alg":"RS256","kid":"k","crit":["exp"]}"#,
                Rejection::CritUnsupported,
            ),
            (r#"{"alg":"RS256"}"#, Rejection::MissingKid),
            (r#"not json"#, Rejection::Malformed),
        ];
        for (header, expected) in cases {
            assert_eq!(
                check_header(&token_with_header(header), &allowed),
                Err(expected),
                "{header}"
            );
        }
        assert_eq!(check_header("a.b", &allowed), Err(Rejection::Malformed));
        assert_eq!(
            check_header(
                &token_with_header(r#"{"alg":"RS256","kid":"k1","jku":"https://evil"}"#),
                &allowed
            ),
            Ok((Algorithm::RS256, "k1".to_string()))
        );
    }

    #[test]
    fn roles_pick_the_highest_known_role() {
        let v = serde_json::json!(["viewer", "admin", "unknown"]);
        assert_eq!(highest_role(Some(&v)), Ok(Some(Role::Admin)));
        let v = serde_json::json!("editor");
        assert_eq!(highest_role(Some(&v)), Ok(Some(Role::Editor)));
        let v = serde_json::json!(["guest"]);
        assert_eq!(highest_role(Some(&v)), Ok(None));
        let v = serde_json::json!(7);
        assert_eq!(highest_role(Some(&v)), Err(Rejection::InvalidClaim));
    }
}
