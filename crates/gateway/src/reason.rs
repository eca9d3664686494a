//! Why a request was refused, as the audit log, the logs and the metrics name it.
//!
//! Every reason the gateway can record is a variant here, spelled once; docs/audit-log.md must
//! list each of them (a test in this module reads it).

/// Declares a fieldless enum whose variants each have a stable snake_case name: `as_str`,
/// `Display`, `Serialize`, and `ALL` (every variant, for tests that check the docs).
macro_rules! named {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every variant.
            pub const ALL: &[$name] = &[$($name::$variant,)+];

            /// The stable name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
    };
}
pub(crate) use named;

named! {
    /// Why a request was refused, beyond its error code: the audit record's `reason`.
    pub enum AuditReason {
        /// No credential was presented.
        NoCredential => "no_credential",
        /// The client certificate matches two configured clients.
        ClientCertAmbiguous => "client_cert_ambiguous",
        /// The address sent too many refused credentials.
        UnauthenticatedLimited => "unauthenticated_limited",
        /// The key is malformed.
        Malformed => "malformed",
        /// Not an API key of this kind.
        WrongKind => "wrong_kind",
        /// No such key.
        UnknownKey => "unknown_key",
        /// The key's secret is wrong.
        WrongSecret => "wrong_secret",
        /// The key is revoked.
        Revoked => "revoked",
        /// The key has expired.
        Expired => "expired",
        /// An Authorization scheme other than Bearer or DPoP.
        UnsupportedScheme => "unsupported_scheme",
        /// The key store did not answer.
        StoreUnavailable => "store_unavailable",
        /// A bearer JWT from no configured identity provider.
        UnknownIssuer => "unknown_issuer",
        /// An ID token sent as an access token.
        IdTokenAsBearer => "id_token_as_bearer",
        /// A sender-constrained token sent as a plain bearer token.
        BoundTokenAsBearer => "bound_token_as_bearer",
        /// A broker token sent without its DPoP proof.
        DpopTokenAsBearer => "dpop_token_as_bearer",
        /// A bearer JWT that failed verification.
        JwtInvalid => "jwt_invalid",
        /// A bearer JWT without a usable subject.
        JwtSubject => "jwt_subject",
        /// Portcullis-On-Behalf-Of from a key that is not a delegate.
        NotADelegate => "not_a_delegate",
        /// A model outside the caller's allow-list (answered 404).
        ModelNotAllowed => "model_not_allowed",
        /// The caller may not do this action.
        ScopeMissing => "scope_missing",
        /// A restricted output policy on a model without an output table.
        OutputPolicyUnenforceable => "output_policy_unenforceable",
        /// A rate limit.
        RateLimited => "rate_limited",
        /// A request or row quota.
        QuotaExhausted => "quota_exhausted",
        /// A token or spend budget without room for the request's worst case.
        BudgetExhausted => "budget_exhausted",
        /// A model with no price, called by a caller with a spend cap.
        Unpriced => "unpriced_model",
        /// A delegate key's cap on distinct end users.
        UserCap => "user_cap",
        /// A concurrency limit.
        ConcurrencyLimited => "concurrency_limited",
        /// The server or a model's queue is full.
        Overloaded => "overloaded",
        /// The shared limiter did not answer.
        LimiterUnavailable => "limiter_unavailable",
        /// An admin request with a Host not in admin_hosts.
        AdminHost => "admin_host",
        /// An app attestation that was not accepted.
        Attestation => "attestation",
        /// A subject token that was not accepted.
        SubjectToken => "subject_token",
        /// A subject token issued to another client.
        SubjectTokenAudience => "subject_token_audience",
        /// A subject token whose azp names another party.
        SubjectTokenAzp => "subject_token_azp",
        /// A token request naming more than one audience.
        TargetCount => "target_count",
        /// A DPoP proof refused: `dpop_missing`.
        DpopMissing => "dpop_missing",
        /// A DPoP proof refused: `dpop_multiple`.
        DpopMultiple => "dpop_multiple",
        /// A DPoP proof refused: `dpop_malformed`.
        DpopMalformed => "dpop_malformed",
        /// A DPoP proof refused: `dpop_typ`.
        DpopTyp => "dpop_typ",
        /// A DPoP proof refused: `dpop_alg`.
        DpopAlg => "dpop_alg",
        /// A DPoP proof refused: `dpop_private_key`.
        DpopPrivateKey => "dpop_private_key",
        /// A DPoP proof refused: `dpop_key`.
        DpopKey => "dpop_key",
        /// A DPoP proof refused: `dpop_weak_key`.
        DpopWeakKey => "dpop_weak_key",
        /// A DPoP proof refused: `dpop_signature`.
        DpopSignature => "dpop_signature",
        /// A DPoP proof refused: `dpop_claims`.
        DpopClaims => "dpop_claims",
        /// A DPoP proof refused: `dpop_htm`.
        DpopHtm => "dpop_htm",
        /// A DPoP proof refused: `dpop_htu`.
        DpopHtu => "dpop_htu",
        /// A DPoP proof refused: `dpop_iat`.
        DpopIat => "dpop_iat",
        /// A DPoP proof refused: `dpop_nonce`.
        DpopNonce => "dpop_nonce",
        /// A DPoP proof refused: `dpop_ath`.
        DpopAth => "dpop_ath",
        /// A DPoP proof refused: `dpop_jkt`.
        DpopJkt => "dpop_jkt",
        /// A DPoP proof refused: `dpop_replay`.
        DpopReplay => "dpop_replay",
        /// A DPoP proof refused: `dpop_replay_unavailable`.
        DpopReplayUnavailable => "dpop_replay_unavailable",
        /// A broker token refused: `token_unknown_key`.
        TokenUnknownKey => "token_unknown_key",
        /// A broker token refused: `token_signature`.
        TokenSignature => "token_signature",
        /// A broker token refused: `token_claims`.
        TokenClaims => "token_claims",
        /// A broker token refused: `token_typ`.
        TokenTyp => "token_typ",
        /// A broker token refused: `token_alg`.
        TokenAlg => "token_alg",
        /// A broker token refused: `token_malformed`.
        TokenMalformed => "token_malformed",
        /// A broker token refused: `token_unknown_app`.
        TokenUnknownApp => "token_unknown_app",
    }
}

#[cfg(test)]
mod tests {
    use super::AuditReason;
    use crate::error::ErrorCode;

    /// The audit log's `reason` is an [`AuditReason`] or an [`ErrorCode`]; docs/audit-log.md
    /// lists every one (the `dpop_*` and `token_*` families as such), and README's table every
    /// error code (docs/mobile.md the token endpoint's OAuth codes).
    #[test]
    fn every_reason_and_error_code_the_code_can_write_is_documented() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let audit_doc = std::fs::read_to_string(root.join("../../docs/audit-log.md")).unwrap();
        let readme = std::fs::read_to_string(root.join("../../README.md")).unwrap();
        // The token endpoint's OAuth codes (and the DPoP challenge's) are in the broker's guide.
        let mobile = std::fs::read_to_string(root.join("../../docs/mobile.md")).unwrap();
        let documented = |text: &str, name: &str| text.contains(&format!("`{name}`"));
        let family = |name: &str| {
            ["dpop_", "token_"]
                .iter()
                .any(|prefix| name.starts_with(prefix) && documented(&audit_doc, &format!("{prefix}*")))
        };
        let mut missing: Vec<String> = AuditReason::ALL
            .iter()
            .map(|reason| reason.as_str())
            .filter(|reason| {
                // A reason that is also an error code may be documented with the codes.
                let code = ErrorCode::ALL.iter().any(|code| code.as_str() == *reason) && documented(&readme, reason);
                !documented(&audit_doc, reason) && !family(reason) && !code
            })
            .map(|reason| format!("{reason} (docs/audit-log.md)"))
            .collect();
        missing.extend(
            ErrorCode::ALL
                .iter()
                .map(|code| code.as_str())
                .filter(|code| !documented(&readme, code) && !documented(&mobile, code))
                .map(|code| format!("{code} (README.md, or docs/mobile.md for the token endpoint)")),
        );
        assert!(missing.is_empty(), "reasons or codes the code can write but the docs do not list: {missing:?}");
    }

    #[test]
    fn names_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for name in AuditReason::ALL.iter().map(|r| r.as_str()).chain(ErrorCode::ALL.iter().map(|c| c.as_str())) {
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{name}");
            seen.insert(name);
        }
        assert_eq!(seen.len(), AuditReason::ALL.len() + ErrorCode::ALL.len() - shared(), "no name means two things");
    }

    /// Names that are both an error code and a reason, meaning the same refusal.
    fn shared() -> usize {
        AuditReason::ALL.iter().filter(|r| ErrorCode::ALL.iter().any(|c| c.as_str() == r.as_str())).count()
    }
}
