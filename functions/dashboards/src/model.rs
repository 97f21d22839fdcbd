//! Dashboards and settings as the API sees them, and their validation. No I/O here.

use app_web::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub const MAX_WIDGETS: usize = 50;
pub const MAX_NAME: usize = 200;
pub const MAX_DESCRIPTION: usize = 2000;
pub const MAX_METRICS: usize = 10;
pub const MAX_DIMENSIONS: usize = 9;
pub const MAX_FILTERS: usize = 10;
pub const MAX_FILTER_VALUES: usize = 100;
pub const MAX_ROW_LIMIT: u32 = 10_000;
/// DynamoDB's item limit is 400 KB; we stop well below it.
pub const MAX_ITEM_BYTES: usize = 350 * 1024;

/// The body of POST and PUT (and the result of applying a PATCH).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DashboardInput {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub layout: Layout,
    #[serde(default)]
    pub widgets: Vec<Widget>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// Grid columns, 1–24.
    pub columns: u16,
}

impl Default for Layout {
    fn default() -> Self {
        Self { columns: 12 }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Widget {
    pub id: String,
    pub kind: WidgetKind,
    pub title: String,
    pub position: GridPosition,
    pub query: WidgetQuery,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WidgetKind {
    Kpi,
    Timeseries,
    Table,
    TopList,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GridPosition {
    pub x: u16,
    pub y: u16,
    pub w: u16,
    pub h: u16,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WidgetQuery {
    pub connection_id: String,
    pub metrics: Vec<String>,
    #[serde(default)]
    pub dimensions: Vec<String>,
    pub date_range: DateRange,
    #[serde(default)]
    pub filters: Vec<Filter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Either a preset or explicit ISO dates (`YYYY-MM-DD`), never both.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DateRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<DatePreset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<String>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DatePreset {
    #[serde(rename = "last_7_days")]
    Last7Days,
    #[serde(rename = "last_28_days")]
    Last28Days,
    #[serde(rename = "last_90_days")]
    Last90Days,
    MonthToDate,
    YearToDate,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub dimension: String,
    pub op: FilterOp,
    pub values: Vec<String>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FilterOp {
    Exact,
    Contains,
    BeginsWith,
    InList,
    NotExact,
}

fn check_len(errors: &mut Vec<FieldError>, field: &str, value: &str, min: usize, max: usize) {
    let n = value.chars().count();
    if n < min || n > max {
        errors.push(FieldError::new(
            field,
            format!("must be {min}–{max} characters"),
        ));
    }
}

/// GA API names: `sessions`, `sessionDefaultChannelGroup`, `customEvent:plan`.
pub fn is_ga_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 100
        && bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

pub fn is_iso_date(value: &str) -> bool {
    value.len() == 10 && value.parse::<jiff::civil::Date>().is_ok()
}

fn is_plain_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl DashboardInput {
    /// Every rule of the body, collected (the client sees all problems at once).
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_len(&mut errors, "name", self.name.trim(), 1, MAX_NAME);
        check_len(
            &mut errors,
            "description",
            &self.description,
            0,
            MAX_DESCRIPTION,
        );
        if !(1..=24).contains(&self.layout.columns) {
            errors.push(FieldError::new("layout.columns", "must be 1–24"));
        }
        if self.widgets.len() > MAX_WIDGETS {
            errors.push(FieldError::new(
                "widgets",
                format!("at most {MAX_WIDGETS} widgets"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, widget) in self.widgets.iter().enumerate() {
            let at = |f: &str| format!("widgets[{i}].{f}");
            if !is_plain_id(&widget.id) {
                errors.push(FieldError::new(at("id"), "must be 1–64 of [A-Za-z0-9_-]"));
            } else if !seen.insert(widget.id.as_str()) {
                errors.push(FieldError::new(at("id"), "duplicate widget id"));
            }
            check_len(&mut errors, &at("title"), widget.title.trim(), 1, MAX_NAME);
            let p = widget.position;
            if p.w == 0 || p.h == 0 || p.h > 100 || p.y > 1000 {
                errors.push(FieldError::new(
                    at("position"),
                    "w and h must be ≥ 1, h ≤ 100, y ≤ 1000",
                ));
            } else if u32::from(p.x) + u32::from(p.w) > u32::from(self.layout.columns) {
                errors.push(FieldError::new(
                    at("position"),
                    "x + w must fit within layout.columns",
                ));
            }
            widget.query.validate(&at("query"), &mut errors);
        }
        errors
    }

    /// The distinct GA connections the widgets reference.
    pub fn connection_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .widgets
            .iter()
            .map(|w| w.query.connection_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

impl WidgetQuery {
    fn validate(&self, at: &str, errors: &mut Vec<FieldError>) {
        if !is_plain_id(&self.connection_id) {
            errors.push(FieldError::new(
                format!("{at}.connection_id"),
                "must be a connection id",
            ));
        }
        if self.metrics.is_empty() || self.metrics.len() > MAX_METRICS {
            errors.push(FieldError::new(
                format!("{at}.metrics"),
                format!("1–{MAX_METRICS} metrics"),
            ));
        }
        if self.dimensions.len() > MAX_DIMENSIONS {
            errors.push(FieldError::new(
                format!("{at}.dimensions"),
                format!("at most {MAX_DIMENSIONS} dimensions"),
            ));
        }
        for (kind, names) in [("metrics", &self.metrics), ("dimensions", &self.dimensions)] {
            if let Some(j) = names.iter().position(|n| !is_ga_name(n)) {
                errors.push(FieldError::new(
                    format!("{at}.{kind}[{j}]"),
                    "not a GA4 API name",
                ));
            }
        }
        let range = &self.date_range;
        match (range.preset, &range.start_date, &range.end_date) {
            (Some(_), None, None) => {}
            (None, Some(start), Some(end)) => {
                if !is_iso_date(start) || !is_iso_date(end) {
                    errors.push(FieldError::new(
                        format!("{at}.date_range"),
                        "dates must be YYYY-MM-DD",
                    ));
                } else if end < start {
                    errors.push(FieldError::new(
                        format!("{at}.date_range"),
                        "end_date is before start_date",
                    ));
                }
            }
            _ => errors.push(FieldError::new(
                format!("{at}.date_range"),
                "give either `preset` or both `start_date` and `end_date`",
            )),
        }
        if self.filters.len() > MAX_FILTERS {
            errors.push(FieldError::new(
                format!("{at}.filters"),
                format!("at most {MAX_FILTERS} filters"),
            ));
        }
        for (j, filter) in self.filters.iter().enumerate() {
            if !is_ga_name(&filter.dimension) {
                errors.push(FieldError::new(
                    format!("{at}.filters[{j}].dimension"),
                    "not a GA4 API name",
                ));
            }
            let single = !matches!(filter.op, FilterOp::InList);
            if filter.values.is_empty()
                || filter.values.len() > MAX_FILTER_VALUES
                || (single && filter.values.len() != 1)
                || filter.values.iter().any(|v| v.chars().count() > 500)
            {
                errors.push(FieldError::new(
                    format!("{at}.filters[{j}].values"),
                    "one value (in_list: 1–100), each at most 500 characters",
                ));
            }
        }
        if let Some(limit) = self.limit
            && !(1..=MAX_ROW_LIMIT).contains(&limit)
        {
            errors.push(FieldError::new(
                format!("{at}.limit"),
                format!("must be 1–{MAX_ROW_LIMIT}"),
            ));
        }
    }
}

/// A stored dashboard as returned by the API.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Dashboard {
    pub id: String,
    #[serde(flatten)]
    pub content: DashboardInput,
    pub version: u64,
    pub created_at: String,
    pub created_by: String,
    pub updated_at: String,
    pub updated_by: String,
}

/// One row of the list.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DashboardSummary {
    pub id: String,
    pub name: String,
    pub description: String,
    pub widget_count: usize,
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Dashboard> for DashboardSummary {
    fn from(d: &Dashboard) -> Self {
        Self {
            id: d.id.clone(),
            name: d.content.name.clone(),
            description: d.content.description.clone(),
            widget_count: d.content.widgets.len(),
            version: d.version,
            created_at: d.created_at.clone(),
            updated_at: d.updated_at.clone(),
        }
    }
}

// ---- settings ----

/// Tenant defaults or a user's preferences. Every field optional: absent means "inherit".
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SettingsValues {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_date_range: Option<DatePreset>,
    /// IANA time zone name, e.g. `Europe/Berlin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub week_start: Option<WeekStart>,
    /// ISO 4217 code, e.g. `EUR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// BCP 47 tag, e.g. `de-DE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WeekStart {
    Monday,
    Sunday,
    Saturday,
}

impl SettingsValues {
    pub fn product_defaults() -> Self {
        Self {
            default_date_range: Some(DatePreset::Last28Days),
            timezone: Some("UTC".into()),
            week_start: Some(WeekStart::Monday),
            currency: Some("USD".into()),
            locale: Some("en-US".into()),
        }
    }

    /// `self` with every field `over` sets replaced.
    pub fn overlay(&self, over: &Self) -> Self {
        Self {
            default_date_range: over.default_date_range.or(self.default_date_range),
            timezone: over.timezone.clone().or_else(|| self.timezone.clone()),
            week_start: over.week_start.or(self.week_start),
            currency: over.currency.clone().or_else(|| self.currency.clone()),
            locale: over.locale.clone().or_else(|| self.locale.clone()),
        }
    }

    pub fn validate(&self, at: &str, errors: &mut Vec<FieldError>) {
        if let Some(tz) = &self.timezone
            && jiff::tz::TimeZone::get(tz).is_err()
        {
            errors.push(FieldError::new(
                format!("{at}.timezone"),
                "not an IANA time zone name",
            ));
        }
        if let Some(currency) = &self.currency
            && !(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()))
        {
            errors.push(FieldError::new(
                format!("{at}.currency"),
                "must be an ISO 4217 code like EUR",
            ));
        }
        if let Some(locale) = &self.locale {
            let mut parts = locale.split('-');
            let lang_ok = parts.next().is_some_and(|l| {
                (2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_lowercase())
            });
            let rest_ok = parts.all(|p| {
                (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric())
            });
            if !(lang_ok && rest_ok && locale.len() <= 35) {
                errors.push(FieldError::new(
                    format!("{at}.locale"),
                    "must be a BCP 47 tag like de-DE",
                ));
            }
        }
    }
}

/// PUT /v1/settings: either block may be given; `tenant` needs admin.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdate {
    #[serde(default)]
    pub tenant: Option<SettingsValues>,
    #[serde(default)]
    pub user: Option<SettingsValues>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SettingsView {
    /// What applies to the caller: product defaults ← tenant defaults ← own preferences.
    pub effective: SettingsValues,
    pub tenant: SettingsValues,
    pub user: SettingsValues,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widget(id: &str) -> Widget {
        Widget {
            id: id.into(),
            kind: WidgetKind::Kpi,
            title: "Users".into(),
            position: GridPosition {
                x: 0,
                y: 0,
                w: 4,
                h: 2,
            },
            query: WidgetQuery {
                connection_id: "c1".into(),
                metrics: vec!["activeUsers".into()],
                dimensions: vec![],
                date_range: DateRange {
                    preset: Some(DatePreset::Last7Days),
                    start_date: None,
                    end_date: None,
                },
                filters: vec![],
                limit: None,
            },
        }
    }

    fn input() -> DashboardInput {
        DashboardInput {
            name: "Traffic".into(),
            description: String::new(),
            layout: Layout::default(),
            widgets: vec![widget("w1")],
        }
    }

    #[test]
    fn a_valid_dashboard_has_no_errors() {
        assert!(input().validate().is_empty());
    }

    #[test]
    fn each_rule_reports_its_field() {
        type Mutate = fn(&mut DashboardInput);
        let cases: [(Mutate, &str); 10] = [
            (|d| d.name = " ".into(), "name"),
            (|d| d.name = "x".repeat(201), "name"),
            (|d| d.layout.columns = 0, "layout.columns"),
            (
                |d| d.widgets = (0..51).map(|i| widget(&format!("w{i}"))).collect(),
                "widgets",
            ),
            (|d| d.widgets.push(widget("w1")), "widgets[1].id"),
            (|d| d.widgets[0].position.x = 10, "widgets[0].position"),
            (
                |d| d.widgets[0].query.metrics.clear(),
                "widgets[0].query.metrics",
            ),
            (
                |d| d.widgets[0].query.metrics[0] = "drop table".into(),
                "widgets[0].query.metrics[0]",
            ),
            (
                |d| d.widgets[0].query.date_range.start_date = Some("2024-01-01".into()),
                "widgets[0].query.date_range",
            ),
            (
                |d| d.widgets[0].query.limit = Some(0),
                "widgets[0].query.limit",
            ),
        ];
        for (mutate, field) in cases {
            let mut d = input();
            mutate(&mut d);
            let errors = d.validate();
            assert!(
                errors.iter().any(|e| e.field == field),
                "{field}: {errors:?}"
            );
        }
    }

    #[test]
    fn settings_validation() {
        let mut errors = Vec::new();
        SettingsValues {
            timezone: Some("Mars/Olympus".into()),
            currency: Some("usd".into()),
            locale: Some("english".into()),
            ..Default::default()
        }
        .validate("user", &mut errors);
        assert_eq!(errors.len(), 3, "{errors:?}");
        let mut errors = Vec::new();
        SettingsValues {
            timezone: Some("Europe/Berlin".into()),
            currency: Some("EUR".into()),
            locale: Some("de-DE".into()),
            ..Default::default()
        }
        .validate("user", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
    }
}
