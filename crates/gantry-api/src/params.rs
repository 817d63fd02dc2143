//! Request parameters: extractors that answer a malformed query string, path or body with
//! the API's JSON 400 (axum's own rejections are plain text), and the date and month
//! parameters in the network's time zone.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use gantry_core::time::{civil_from_days, days_from_civil, format_timestamp};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `Query<T>` with a JSON 400 on a bad query string.
pub struct Q<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Q<T>, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Q(q.0))
            .map_err(|e| ApiError::bad("bad_parameter", e.body_text()))
    }
}

/// `Json<T>` with a JSON 400 on a bad body.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Body<T>, ApiError> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|b| Body(b.0))
            .map_err(|e| ApiError::bad("bad_body", e.body_text()))
    }
}

/// A calendar day (days since 1970-01-01) from `YYYY-MM-DD`.
pub fn parse_date(name: &str, text: &str) -> Result<i64, ApiError> {
    let bad =
        || ApiError::bad("bad_date", format!("`{name}` must be a date YYYY-MM-DD, not `{text}`"));
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let num = |s: &str| s.parse::<u32>().map_err(|_| bad());
    let (y, m, d) = (num(&text[..4])?, num(&text[5..7])?, num(&text[8..])?);
    let day = days_from_civil(y as i64, m, d);
    // Round trip: rejects 2026-02-30 and the like.
    if !(1970..=2200).contains(&y) || civil_from_days(day) != (y as i64, m, d) {
        return Err(bad());
    }
    Ok(day)
}

/// A month `YYYY-MM` as its first day and the first day of the next.
pub fn parse_month(text: &str) -> Result<(i64, i64), ApiError> {
    let bad = || ApiError::bad("bad_month", format!("`month` must be YYYY-MM, not `{text}`"));
    if text.len() != 7 {
        return Err(bad());
    }
    let first = parse_date("month", &format!("{text}-01")).map_err(|_| bad())?;
    let (y, m, _) = civil_from_days(first);
    let next = if m == 12 { days_from_civil(y + 1, 1, 1) } else { days_from_civil(y, m + 1, 1) };
    Ok((first, next))
}

/// The instants `[from, to)` (seconds) that local day `day` covers in a zone.
pub fn day_seconds(day: i64, offset_min: i32) -> (u32, u32) {
    let start = day * 86_400 - offset_min as i64 * 60;
    (start.max(0) as u32, (start + 86_400).max(0) as u32)
}

/// The local day an instant (seconds) falls on.
pub fn local_day_of(secs: u32, offset_min: i32) -> i64 {
    (secs as i64 + offset_min as i64 * 60).div_euclid(86_400)
}

/// An instant (seconds) in the contract's time format, in the zone.
pub fn time_text(secs: u32, offset_min: i32) -> String {
    format_timestamp(secs as i64 * 1000, offset_min)
}

/// Today in the zone, by the server's clock.
pub fn today(offset_min: i32) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    local_day_of(now as u32, offset_min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_months() {
        let cases: &[(&str, bool)] = &[
            ("2026-11-10", true),
            ("2024-02-29", true),
            ("2026-02-29", false),
            ("2026-13-01", false),
            ("2026-1-10", false),
            ("20261110", false),
            ("2026-11-1x", false),
            ("", false),
        ];
        for (text, ok) in cases {
            assert_eq!(parse_date("date", text).is_ok(), *ok, "{text}");
        }
        let e = parse_date("date", "x").unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "bad_date"));
        let (a, b) = parse_month("2026-12").unwrap();
        assert_eq!(
            (gantry_core::time::format_date(a), gantry_core::time::format_date(b)),
            ("2026-12-01".into(), "2027-01-01".into())
        );
        assert!(parse_month("2026-00").is_err() && parse_month("2026-1").is_err());
        // 2026-11-10 in +08:00 starts at 2026-11-09T16:00Z.
        let d = parse_date("date", "2026-11-10").unwrap();
        let (s, e) = day_seconds(d, 480);
        assert_eq!(time_text(s, 480), "2026-11-10T00:00:00+08:00");
        assert_eq!(e - s, 86_400);
        assert_eq!(local_day_of(e - 1, 480), d);
    }
}
