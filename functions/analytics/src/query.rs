//! Dates, presets, the allowed metrics/dimensions, and the GA requests behind each route. No I/O.

use app_web::{ApiError, FieldError};
use jiff::civil::Date;
use serde::Deserialize;
use serde_json::{Value, json};

/// Metrics the analytics routes accept (GA4 API names) and whether each is a rate (averaged,
/// not summed, when points are aggregated).
pub const METRICS: &[(&str, bool)] = &[
    ("activeUsers", false),
    ("sessions", false),
    ("screenPageViews", false),
    ("newUsers", false),
    ("eventCount", false),
    ("keyEvents", false),
    ("totalRevenue", false),
    ("bounceRate", true),
    ("engagementRate", true),
    ("averageSessionDuration", true),
];

pub const DIMENSIONS: &[&str] = &[
    "country",
    "city",
    "deviceCategory",
    "browser",
    "pagePath",
    "sessionSource",
    "sessionDefaultChannelGroup",
];

pub const PRESETS: &[&str] = &[
    "last_7_days",
    "last_28_days",
    "last_90_days",
    "month_to_date",
    "year_to_date",
];

/// Longest range accepted: two years.
pub const MAX_RANGE_DAYS: i64 = 731;

pub fn is_rate(metric: &str) -> bool {
    METRICS.iter().any(|(m, rate)| *m == metric && *rate)
}

pub fn check_metric(field: &str, metric: &str) -> Result<(), FieldError> {
    if METRICS.iter().any(|(m, _)| *m == metric) {
        Ok(())
    } else {
        let allowed: Vec<&str> = METRICS.iter().map(|(m, _)| *m).collect();
        Err(FieldError::new(
            field,
            format!("unknown metric; allowed: {}", allowed.join(", ")),
        ))
    }
}

pub fn check_dimension(field: &str, dimension: &str) -> Result<(), FieldError> {
    if DIMENSIONS.contains(&dimension) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("unknown dimension; allowed: {}", DIMENSIONS.join(", ")),
        ))
    }
}

/// An inclusive date range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: Date,
    pub end: Date,
}

impl Range {
    pub fn days(&self) -> i64 {
        self.start
            .until((jiff::Unit::Day, self.end))
            .map(|span| i64::from(span.get_days()) + 1)
            .unwrap_or(0)
    }
    pub fn includes(&self, day: Date) -> bool {
        self.start <= day && day <= self.end
    }
    pub fn ga(&self) -> Value {
        json!({ "startDate": self.start.to_string(), "endDate": self.end.to_string() })
    }
    /// The same number of days immediately before.
    pub fn previous_period(&self) -> Option<Range> {
        let end = self.start.yesterday().ok()?;
        let start = end
            .checked_sub(jiff::Span::new().days(self.days() - 1))
            .ok()?;
        Some(Range { start, end })
    }
    /// The same dates one year earlier.
    pub fn previous_year(&self) -> Option<Range> {
        let year = jiff::Span::new().years(1);
        Some(Range {
            start: self.start.checked_sub(year).ok()?,
            end: self.end.checked_sub(year).ok()?,
        })
    }
}

pub fn today() -> Date {
    jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
}

/// A preset relative to `today` (UTC): `last_N_days` ends yesterday (GA's convention: today is
/// incomplete); `*_to_date` include today.
pub fn preset(name: &str, today: Date) -> Option<Range> {
    let days_back = |n: i64| -> Option<Range> {
        Some(Range {
            start: today.checked_sub(jiff::Span::new().days(n)).ok()?,
            end: today.yesterday().ok()?,
        })
    };
    match name {
        "last_7_days" => days_back(7),
        "last_28_days" => days_back(28),
        "last_90_days" => days_back(90),
        "month_to_date" => Some(Range {
            start: today.first_of_month(),
            end: today,
        }),
        "year_to_date" => Some(Range {
            start: jiff::civil::date(today.year(), 1, 1),
            end: today,
        }),
        _ => None,
    }
}

/// The date part shared by every route: a preset, or explicit start and end dates.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct DateParams {
    pub preset: Option<String>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
}

impl DateParams {
    pub fn resolve(&self, today: Date) -> Result<Range, ApiError> {
        let range = match (&self.preset, &self.start_date, &self.end_date) {
            (Some(name), None, None) => preset(name, today).ok_or_else(|| {
                ApiError::field(
                    "preset",
                    format!("unknown preset; allowed: {}", PRESETS.join(", ")),
                )
            })?,
            (None, Some(start), Some(end)) => {
                let parse = |field: &str, v: &str| {
                    v.parse::<Date>()
                        .map_err(|_| ApiError::field(field, "must be a date YYYY-MM-DD"))
                };
                Range {
                    start: parse("start_date", start)?,
                    end: parse("end_date", end)?,
                }
            }
            _ => {
                return Err(ApiError::field(
                    "start_date",
                    format!(
                        "give either `preset` ({}) or both `start_date` and `end_date`",
                        PRESETS.join(", ")
                    ),
                ));
            }
        };
        if range.end < range.start {
            return Err(ApiError::field("end_date", "is before start_date"));
        }
        if range.days() > MAX_RANGE_DAYS {
            return Err(ApiError::field(
                "start_date",
                "ranges are limited to 2 years",
            ));
        }
        Ok(range)
    }
}

/// A GA4 request with the options every analytics call uses.
pub fn ga_request(ranges: &[Range], dimensions: &[&str], metrics: &[&str]) -> Value {
    json!({
        "dateRanges": ranges.iter().map(Range::ga).collect::<Vec<_>>(),
        "dimensions": dimensions.iter().map(|d| json!({ "name": d })).collect::<Vec<_>>(),
        "metrics": metrics.iter().map(|m| json!({ "name": m })).collect::<Vec<_>>(),
        "returnPropertyQuota": true,
    })
}

/// A metric's value from a GA response row.
pub fn metric_value(row: &Value, index: usize) -> f64 {
    row["metricValues"][index]["value"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub fn dimension_value(row: &Value, index: usize) -> &str {
    row["dimensionValues"][index]["value"]
        .as_str()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_comparisons() {
        let today = jiff::civil::date(2026, 3, 15);
        let last7 = preset("last_7_days", today).unwrap();
        assert_eq!(
            (last7.start.to_string(), last7.end.to_string()),
            ("2026-03-08".into(), "2026-03-14".into())
        );
        assert_eq!(last7.days(), 7);
        let previous = last7.previous_period().unwrap();
        assert_eq!(
            (previous.start.to_string(), previous.end.to_string()),
            ("2026-03-01".into(), "2026-03-07".into())
        );
        let year = last7.previous_year().unwrap();
        assert_eq!(year.start.to_string(), "2025-03-08");
        assert_eq!(
            preset("month_to_date", today).unwrap().start.to_string(),
            "2026-03-01"
        );
        assert_eq!(preset("year_to_date", today).unwrap().days(), 74);
        assert_eq!(preset("last_90_days", today).unwrap().days(), 90);
        assert!(preset("last_year", today).is_none());
    }

    #[test]
    fn date_params_are_validated() {
        let today = jiff::civil::date(2026, 3, 15);
        let p = |preset: Option<&str>, s: Option<&str>, e: Option<&str>| DateParams {
            preset: preset.map(Into::into),
            start_date: s.map(Into::into),
            end_date: e.map(Into::into),
        };
        assert!(p(Some("last_28_days"), None, None).resolve(today).is_ok());
        assert!(
            p(None, Some("2024-01-01"), Some("2025-12-31"))
                .resolve(today)
                .is_ok()
        );
        for bad in [
            p(None, Some("2023-01-01"), Some("2025-12-31")), // over 2 years
            p(None, Some("2026-02-01"), Some("2026-01-01")), // backwards
            p(None, Some("yesterday"), Some("2026-01-01")),
            p(Some("last_7_days"), Some("2026-01-01"), Some("2026-01-02")),
            p(Some("forever"), None, None),
            p(None, None, None),
        ] {
            assert!(bad.resolve(today).is_err());
        }
    }
}
