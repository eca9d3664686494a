//! May they: principal × model × action → [`Grant`].
//!
//! A `Grant` is a capability. Its fields are private to this module and it has no public
//! constructor, so a backend, which takes a `&Grant`, cannot be reached by any path that skipped
//! this check.

use crate::{
    authn::{Principal, PrincipalKind},
    backend::Model,
    error::ApiError,
    minimise::OutputPolicy,
};

/// What the caller wants to do to a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read metadata or readiness.
    Metadata,
    /// Run inference.
    Infer,
}

/// Permission to perform one action on one model, for one principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    model: String,
    principal: String,
    action: Action,
    output: OutputPolicy,
}

impl Grant {
    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn principal(&self) -> &str {
        &self.principal
    }

    pub fn action(&self) -> Action {
        self.action
    }

    /// What the caller may see of the outputs (and of the model's metadata).
    pub fn output(&self) -> OutputPolicy {
        self.output
    }

    /// The grant the server gives itself to run a model's known-answer checks at load.
    pub(crate) fn for_load_check(model: &str) -> Grant {
        Grant {
            model: model.to_owned(),
            principal: "system:load-check".into(),
            action: Action::Infer,
            output: OutputPolicy::Raw,
        }
    }
}

/// Decides. A model the principal may not reach is reported exactly like a model that does not
/// exist (404), so names cannot be probed; a reachable model and a missing scope is 403.
pub fn authorize(principal: &Principal, model: &Model, action: Action) -> Result<Grant, ApiError> {
    let name = &model.config.name;
    let reachable = match principal.kind {
        PrincipalKind::Anonymous => model.config.public,
        PrincipalKind::ApiKey
        | PrincipalKind::ClientCert
        | PrincipalKind::IdentityToken
        | PrincipalKind::BrokerToken => model.config.public || principal.models.allows(name),
    };
    if !reachable {
        return Err(ApiError::model_not_found(name).with_audit_reason("model_not_allowed"));
    }
    let permitted = match action {
        Action::Metadata => principal.scopes.metadata,
        Action::Infer => principal.scopes.infer,
    };
    if !permitted {
        return Err(ApiError::forbidden().with_audit_reason("scope_missing"));
    }
    // A key's own policy narrows the model's default; only an admin's --widen-output lets it widen.
    let default = model.config.output_policy;
    let output = match principal.output {
        None => default,
        Some(policy) if principal.widen_output => policy,
        Some(policy) => policy.narrowest(default),
    };
    // A policy below raw needs the model's output table to be applied; without one the model's
    // outputs would go out raw, so a key restricted to less is refused instead.
    if output != OutputPolicy::Raw && model.config.output.is_none() {
        return Err(ApiError::forbidden().with_audit_reason("output_policy_unenforceable"));
    }
    Ok(Grant { model: name.clone(), principal: principal.id.clone(), action, output })
}
