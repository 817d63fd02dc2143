//! API keys and roles (contract §5): `Authorization: Bearer <key>`; the server knows only
//! each key's SHA-256, never the key, so neither the config file nor a memory dump gives
//! one away. No valid key → 401; a key without the endpoint's role → 403. Neither the key
//! nor its hash is ever logged or put in an error message: only the key's `id`.
//!
//! The lookup is a hash-map probe by the digest of what the client sent. Its timing tells
//! an attacker at most something about a SHA-256 digest they would need a preimage of, so
//! no constant-time comparison is needed.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::ApiKeyConfig;
use crate::error::ApiError;

/// What a key may do. `pii` is not an area but a clearance: it shows personal data (the
/// plate) in clear, on the endpoints the key's other roles open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Finance,
    Crm,
    Ops,
    Pii,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Finance => "finance",
            Role::Crm => "crm",
            Role::Ops => "ops",
            Role::Pii => "pii",
        }
    }
}

/// Who is calling: the key's id and roles.
#[derive(Clone, Debug)]
pub struct Caller {
    pub key_id: Arc<str>,
    pub roles: Arc<[Role]>,
}

impl Caller {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// 403 unless the caller has `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.has(role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(role))
        }
    }

    /// Whether personal data is shown in clear to this caller.
    pub fn sees_pii(&self) -> Visibility {
        if self.has(Role::Pii) {
            Visibility::Clear
        } else {
            Visibility::Masked
        }
    }

    pub fn roles_text(&self) -> String {
        self.roles.iter().map(|r| r.name()).collect::<Vec<_>>().join(",")
    }
}

/// A caller with the `finance` role: as a handler's first argument, it refuses everyone
/// else (403) before any parameter is read.
pub struct Finance(pub Caller);
/// A caller with the `crm` role (see [`Finance`]).
pub struct Crm(pub Caller);

fn caller_with(parts: &axum::http::request::Parts, role: Role) -> Result<Caller, ApiError> {
    // The guard put the caller there; without it (a route outside the guard) nobody passes.
    let caller = parts.extensions.get::<Caller>().cloned().ok_or_else(ApiError::unauthorized)?;
    caller.require(role)?;
    Ok(caller)
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Finance {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Finance, ApiError> {
        caller_with(parts, Role::Finance).map(Finance)
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Crm {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Crm, ApiError> {
        caller_with(parts, Role::Crm).map(Crm)
    }
}

/// How personal data appears in an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    Clear,
    Masked,
}

/// The configured keys, by the hex SHA-256 of the key.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    by_hash: HashMap<String, Caller>,
}

impl Keys {
    pub fn new(keys: &[ApiKeyConfig]) -> Keys {
        let by_hash = keys
            .iter()
            .map(|k| {
                let caller = Caller { key_id: k.id.as_str().into(), roles: k.roles.clone().into() };
                (k.sha256.to_ascii_lowercase(), caller)
            })
            .collect();
        Keys { by_hash }
    }

    /// The caller an `Authorization` header value names, or 401.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Caller, ApiError> {
        let key = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(ApiError::unauthorized)?;
        self.by_hash.get(&key_hash(key)).cloned().ok_or_else(ApiError::unauthorized)
    }
}

/// The hex SHA-256 of a key: what the configuration stores (`printf %s KEY | sha256sum`).
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_known_by_their_hash_only() {
        // sha256("test"): the contract's example digest.
        assert!(key_hash("test").starts_with("9f86d0"));
        let keys = Keys::new(&[ApiKeyConfig {
            id: "fin-01".into(),
            sha256: key_hash("s3cret").to_uppercase(),
            roles: vec![Role::Finance],
        }]);
        let c = keys.authenticate(Some("Bearer s3cret")).unwrap();
        assert_eq!(&*c.key_id, "fin-01");
        assert!(c.require(Role::Finance).is_ok());
        assert_eq!(c.require(Role::Crm).unwrap_err().status.as_u16(), 403);
        assert_eq!(c.sees_pii(), Visibility::Masked);
        for bad in
            [None, Some("s3cret"), Some("Bearer "), Some("Bearer s3cre"), Some("Basic s3cret")]
        {
            let e = keys.authenticate(bad).unwrap_err();
            assert_eq!(e.status.as_u16(), 401);
            assert!(!e.message.contains("s3cre"), "no key in an error");
        }
    }
}
