//! May they: principal × model × action → [`Grant`].
//!
//! A `Grant` is a capability. Its fields are private to this module and it has no public
//! constructor, so a backend, which takes a `&Grant<Infer>`, cannot be reached by any path that
//! skipped this check. A grant carries the model it was given for (the running code takes the
//! model from the grant, so a grant for one model cannot run another) and its action in its type
//! (a grant to read metadata cannot run inference).

use std::{marker::PhantomData, sync::Arc};

use crate::{
    config::ModelConfig,
    error::ApiError,
    minimise::OutputPolicy,
    principal::{Principal, PrincipalId, PrincipalKind},
};

/// What may be guarded by a grant: a model, as far as the decision needs to know it. `backend`
/// implements it for the models it runs and `llm` for language models; this module never sees
/// them, so the decision stays below the code it guards.
pub trait Guarded: Send + Sync + 'static {
    /// The name clients use and keys' allow-lists name.
    fn name(&self) -> &str;
    /// Whether anonymous callers may use it.
    fn public(&self) -> bool;
    /// The output policy for callers whose key sets none.
    fn default_output(&self) -> OutputPolicy;
    /// Whether a policy narrower than raw can be applied to its outputs.
    fn can_narrow_output(&self) -> bool;
}

impl Guarded for ModelConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn public(&self) -> bool {
        self.public
    }

    fn default_output(&self) -> OutputPolicy {
        self.output_policy
    }

    fn can_narrow_output(&self) -> bool {
        self.output.is_some()
    }
}

/// What the caller wants to do to a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read metadata or readiness.
    Metadata,
    /// Run inference.
    Infer,
}

mod sealed {
    pub trait Sealed {}
}

/// An action as a type, for [`Grant`]'s parameter; only [`Infer`] and [`Metadata`] are.
pub trait Permission: sealed::Sealed {
    const ACTION: Action;
}

/// Permission to run inference.
#[derive(Debug)]
pub enum Infer {}

/// Permission to read metadata and readiness.
#[derive(Debug)]
pub enum Metadata {}

impl sealed::Sealed for Infer {}
impl sealed::Sealed for Metadata {}
impl Permission for Infer {
    const ACTION: Action = Action::Infer;
}
impl Permission for Metadata {
    const ACTION: Action = Action::Metadata;
}

/// Permission to perform one action on one model, for one principal.
pub struct Grant<P: Permission, M: Guarded> {
    model: Arc<M>,
    principal: PrincipalId,
    output: OutputPolicy,
    permission: PhantomData<fn() -> P>,
}

impl<P: Permission, M: Guarded> std::fmt::Debug for Grant<P, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("model", &self.model.name())
            .field("principal", &self.principal)
            .field("action", &P::ACTION)
            .field("output", &self.output)
            .finish()
    }
}

impl<P: Permission, M: Guarded> Grant<P, M> {
    /// The one model this grant is for.
    pub fn model(&self) -> &Arc<M> {
        &self.model
    }

    pub fn principal(&self) -> &PrincipalId {
        &self.principal
    }

    pub fn action(&self) -> Action {
        P::ACTION
    }

    /// What the caller may see of the outputs (and of the model's metadata).
    pub fn output(&self) -> OutputPolicy {
        self.output
    }
}

impl<M: Guarded> Grant<Infer, M> {
    /// The grant the server gives itself to run a model's known-answer checks at load.
    pub(crate) fn for_load_check(model: &Arc<M>) -> Grant<Infer, M> {
        Grant {
            model: Arc::clone(model),
            principal: PrincipalId::system("load-check"),
            output: OutputPolicy::Raw,
            permission: PhantomData,
        }
    }
}

/// Decides. A model the principal may not reach is reported exactly like a model that does not
/// exist (404), so names cannot be probed; a reachable model and a missing scope is 403.
pub fn authorize<P: Permission, M: Guarded>(principal: &Principal, model: &Arc<M>) -> Result<Grant<P, M>, ApiError> {
    let name = model.name();
    let reachable = match principal.kind {
        PrincipalKind::Anonymous => model.public(),
        PrincipalKind::ApiKey
        | PrincipalKind::ClientCert
        | PrincipalKind::IdentityToken
        | PrincipalKind::BrokerToken => model.public() || principal.models.allows(name),
    };
    if !reachable {
        return Err(ApiError::model_not_found(name).with_audit_reason(crate::reason::AuditReason::ModelNotAllowed));
    }
    let permitted = match P::ACTION {
        Action::Metadata => principal.scopes.metadata,
        Action::Infer => principal.scopes.infer,
    };
    if !permitted {
        return Err(ApiError::forbidden().with_audit_reason(crate::reason::AuditReason::ScopeMissing));
    }
    // A key's own policy narrows the model's default; only an admin's --widen-output lets it widen.
    let default = model.default_output();
    let output = match principal.output {
        None => default,
        Some(policy) if principal.widen_output => policy,
        Some(policy) => policy.narrowest(default),
    };
    // A policy below raw needs the model's output table to be applied; without one the model's
    // outputs would go out raw, so a key restricted to less is refused instead.
    if output != OutputPolicy::Raw && !model.can_narrow_output() {
        return Err(ApiError::forbidden().with_audit_reason(crate::reason::AuditReason::OutputPolicyUnenforceable));
    }
    Ok(Grant { model: Arc::clone(model), principal: principal.id.clone(), output, permission: PhantomData })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(models: &[&str]) -> Principal {
        Principal {
            id: PrincipalId::key("test"),
            kind: PrincipalKind::ApiKey,
            name: "test".into(),
            models: crate::store::ModelScope::Only(models.iter().map(|m| (*m).to_owned()).collect()),
            scopes: crate::store::Scopes::parse("metadata").unwrap(),
            output: None,
            widen_output: false,
            limits: Default::default(),
            delegate: false,
            device: None,
            delegator: None,
        }
    }

    /// A model as authz sees it: its configuration only.
    type Model = ModelConfig;

    fn model(name: &str) -> Arc<Model> {
        let config = crate::config::Config::from_toml(
            &format!("[[models]]\nname = \"{name}\"\npath = \"m.onnx\"\n"),
            std::path::Path::new("/nonexistent"),
        )
        .unwrap()
        .models
        .remove(0);
        Arc::new(config)
    }

    #[test]
    fn a_grant_carries_the_one_model_and_action_it_was_given_for() {
        let (a, b) = (model("a"), model("b"));
        let grant = authorize::<Metadata, _>(&principal(&["a"]), &a).unwrap();
        assert!(Arc::ptr_eq(grant.model(), &a) && !Arc::ptr_eq(grant.model(), &b));
        assert_eq!(grant.action(), Action::Metadata);
        assert!(authorize::<Metadata, _>(&principal(&["a"]), &b).is_err(), "another model is not reachable");
        // The key may read metadata but not infer: no grant to infer exists for it.
        assert!(authorize::<Infer, _>(&principal(&["a"]), &a).is_err());
    }
}
