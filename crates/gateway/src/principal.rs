//! Who a request is from, once authenticated: a [`Principal`] and its [`PrincipalId`].
//!
//! Every way of naming a caller (`key:<kid>`, `cert:<name>`, `jwt:<issuer>:<sub>`,
//! `user:<app>:<sub>`, `anonymous:<ip>`, and `key:<kid>/user:<id>` for a delegate key's end
//! user) is spelled here and nowhere else: the id is what limits, quotas, the access log and the
//! audit log key on, so two spellings of one caller would split its limits.

use std::{fmt, net::IpAddr};

use crate::store::{ModelScope, Scopes};

/// A caller's stable id. Made only by the constructors below.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PrincipalId(String);

impl PrincipalId {
    /// An API key, by its (public) key id.
    pub fn key(kid: &str) -> PrincipalId {
        PrincipalId(format!("key:{kid}"))
    }

    /// A client certificate listed under `name` in `[[tls.clients]]`.
    pub fn cert(name: &str) -> PrincipalId {
        PrincipalId(format!("cert:{name}"))
    }

    /// The subject of an access token from the identity provider `provider`.
    pub fn jwt(provider: &str, subject: &str) -> PrincipalId {
        PrincipalId(format!("jwt:{provider}:{subject}"))
    }

    /// An app's user, as the token broker names them.
    pub fn app_user(client_id: &str, subject: &str) -> PrincipalId {
        PrincipalId(format!("user:{client_id}:{subject}"))
    }

    /// The device key (its JWK thumbprint) a broker token is bound to: a rate-limit bucket of
    /// its own, so one device cannot spend its user's whole rate.
    pub fn device(jkt: &str) -> PrincipalId {
        PrincipalId(format!("device:{jkt}"))
    }

    /// A caller without a credential, by address.
    pub fn anonymous(client: Option<IpAddr>) -> PrincipalId {
        match client {
            Some(ip) => PrincipalId(format!("anonymous:{ip}")),
            None => PrincipalId("anonymous:unknown".to_owned()),
        }
    }

    /// The server itself, doing `what` (a model's checks at load).
    pub fn system(what: &str) -> PrincipalId {
        PrincipalId(format!("system:{what}"))
    }

    /// The end user `user` that the delegate key `self` acts for.
    pub fn on_behalf_of(&self, user: &str) -> PrincipalId {
        PrincipalId(format!("{}/user:{user}", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What follows `key:` in an API key's id: the key id, and the end user for a delegate
    /// key acting for one. `None` for other callers.
    pub fn after_key(&self) -> Option<&str> {
        self.0.strip_prefix("key:")
    }
}

impl fmt::Display for PrincipalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for PrincipalId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for PrincipalId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    ApiKey,
    /// An access token from a trusted identity provider (`[[identity_providers]]`).
    IdentityToken,
    /// A DPoP-bound token from our own broker.
    BrokerToken,
    /// A client certificate listed in `[[tls.clients]]`.
    ClientCert,
    Anonymous,
}

/// An authenticated caller. Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Stable id for logs and limits.
    pub id: PrincipalId,
    pub kind: PrincipalKind,
    pub name: String,
    pub models: ModelScope,
    pub scopes: Scopes,
    /// The key's own output policy, if it has one.
    pub output: Option<crate::minimise::OutputPolicy>,
    pub widen_output: bool,
    /// The key's own limits (unset ones fall back to `[limits]`).
    pub limits: crate::store::KeyLimits,
    /// May name the end user it acts for (`Portcullis-On-Behalf-Of`).
    pub delegate: bool,
    /// A further rate-limit bucket: the device key of a broker token.
    pub device: Option<(String, crate::config::RateLimit)>,
    /// For a delegate key acting for an end user: the key's own id (`key:<kid>`), under which
    /// its limits count all its users together. `id` then names the user.
    pub delegator: Option<PrincipalId>,
}

impl Principal {
    pub fn anonymous(client: Option<IpAddr>) -> Principal {
        Principal {
            id: PrincipalId::anonymous(client),
            kind: PrincipalKind::Anonymous,
            name: "anonymous".into(),
            // Anonymous callers reach public models only; authz enforces it.
            models: ModelScope::Only(Vec::new()),
            scopes: Scopes::ALL,
            output: None,
            widen_output: false,
            limits: crate::store::KeyLimits::default(),
            delegate: false,
            device: None,
            delegator: None,
        }
    }

    /// The id usage and quotas are counted under: the key id (with the end user, for a
    /// delegate key naming one), or the user of a token. `None` for callers without quotas.
    pub fn usage_id(&self) -> Option<&str> {
        match self.kind {
            PrincipalKind::ApiKey => self.id.after_key(),
            PrincipalKind::IdentityToken | PrincipalKind::BrokerToken => Some(self.id.as_str()),
            PrincipalKind::ClientCert | PrincipalKind::Anonymous => None,
        }
    }

    /// The id the key's own quotas count under: the delegate key's for one of its end users,
    /// else [`Principal::usage_id`].
    pub fn key_usage_id(&self) -> Option<&str> {
        match &self.delegator {
            Some(key) => key.after_key(),
            None => self.usage_id(),
        }
    }
}

impl Principal {
    pub fn client_cert(client: &crate::config::TlsClient) -> Principal {
        Principal {
            id: PrincipalId::cert(&client.name),
            kind: PrincipalKind::ClientCert,
            name: client.name.clone(),
            models: client.models.clone(),
            scopes: client.scopes,
            output: client.output,
            widen_output: false,
            limits: client.limits.clone(),
            delegate: false,
            device: None,
            delegator: None,
        }
    }
}
