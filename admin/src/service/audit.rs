//! The audit log: which entries to list.

use siteward_store::AuditFilter;

use super::{ApiError, Result};

/// The filter of `?actor=&resource=`: blank is no filter; each at most 200 characters.
pub fn filter(actor: Option<&str>, resource: Option<&str>) -> Result<AuditFilter> {
    Ok(AuditFilter {
        actor: part("actor", actor)?,
        resource: part("resource", resource)?,
    })
}

fn part(field: &str, text: Option<&str>) -> Result<Option<String>> {
    match text.map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) if t.chars().count() > 200 => {
            Err(ApiError::invalid(field, "at most 200 characters"))
        }
        Some(t) => Ok(Some(t.to_owned())),
    }
}
