//! JSON or CSV, as the client asks (contract §5: every list or table endpoint answers CSV
//! to `Accept: text/csv`, for finance teams' spreadsheets). The JSON answer is the whole
//! document; the CSV one is its table: one header line, one line per row, UTF-8 with a
//! byte-order mark so that a spreadsheet opens Chinese text as such.

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::ApiError;

/// An answer with a table in it.
pub trait Tabular: Serialize {
    /// Writes the table: flat rows (CSV has no nesting).
    fn write_csv(&self, w: &mut csv::Writer<Vec<u8>>) -> csv::Result<()>;
}

/// What the client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

impl Format {
    /// CSV when `Accept` names `text/csv`, else JSON (also for `*/*` or no `Accept`).
    pub fn of(headers: &HeaderMap) -> Format {
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
        if accept
            .split(',')
            .any(|m| m.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("text/csv")))
        {
            Format::Csv
        } else {
            Format::Json
        }
    }
}

/// UTF-8 byte-order mark: without it Excel reads a CSV as the system's code page.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// `value` as the client asked.
pub fn reply<T: Tabular>(format: Format, value: &T) -> Result<Response, ApiError> {
    match format {
        Format::Json => Ok(axum::Json(value).into_response()),
        Format::Csv => {
            let body = csv_bytes(value)?;
            let mut r = body.into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
            Ok(r)
        }
    }
}

/// The CSV text of `value`'s table, with the byte-order mark.
pub fn csv_bytes<T: Tabular>(value: &T) -> Result<Vec<u8>, ApiError> {
    let mut w = csv::Writer::from_writer(UTF8_BOM.to_vec());
    let written = value.write_csv(&mut w).and_then(|()| w.flush().map_err(csv::Error::from));
    written.map_err(|e| {
        tracing::error!(error = %e, "CSV rendering failed");
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "csv_failed",
            "the answer could not be written as CSV",
        )
    })?;
    w.into_inner().map_err(|_| {
        ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "csv_failed", "CSV buffer")
    })
}

/// Writes each of `rows` (flat structs) as a line; the header comes from the first one's
/// field names, or from `empty_header` when there is none, so an empty table still says
/// what its columns are.
pub fn write_rows<R: Serialize>(
    w: &mut csv::Writer<Vec<u8>>,
    rows: &[R],
    empty_header: &[&str],
) -> csv::Result<()> {
    if rows.is_empty() {
        return w.write_record(empty_header);
    }
    rows.iter().try_for_each(|r| w.serialize(r))
}
