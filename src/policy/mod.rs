//! The signed policy: which partner may receive which camera, when, how, and on what
//! legal basis (DESIGN.md "Signed policy").
//!
//! - [`model`]: the TOML document validated into [`Policy`] / [`Grant`], and the
//!   [`ViewingSession`] a policy decides on. Pure.
//! - [`eval`]: [`evaluate`], the one function deciding a stream or a viewing session, and
//!   [`effective_grants`] for `passerelle check`. Pure: `now` is passed in.
//! - [`signature`]: k-of-n detached minisign signature verification over the policy bytes,
//!   and [`load_policy_dir`], which reads a policy and its signature files, verifies them
//!   before parsing, then validates.
//! - [`keys`]: key generation and signing (`passerelle keygen`, `passerelle policy sign`),
//!   interoperable with the standard `minisign` tool.
//! - [`store`] (layer 1, files): the serial rule [`admit`], its persisted
//!   [`StoredPolicyState`], and the [`PolicyStore`] holding the policy in force across
//!   reloads.
//! - [`install`] (layer 1, files): `passerelle policy install`, verify then swap a policy
//!   and its signatures in atomically; [`load_installed`], the reader that goes with it.
//!
//! Checks left to the caller of [`load_policy_dir`]: that `site` is our own id (done by
//! [`evaluate`], reported by `check`), and the serial against the stored one ([`admit`]).

pub mod eval;
pub mod install;
pub mod keys;
pub mod model;
pub mod signature;
pub mod store;

#[cfg(test)]
mod fixtures;

pub use eval::{
    Decision, DenyReason, EffectiveGrant, effective_grants, evaluate, next_change, policy_status,
};
pub use install::{InstallError, Installed, LayoutProblem, install, load_installed};
pub use keys::{
    KeyError, KeyPairFiles, SigningKey, keygen, read_password_file, sign_policy_file,
    signature_path,
};
pub use model::{
    AgentKind, Grant, HoursWindow, Mode, Policy, PolicyError, PolicyIssue, ViewingSession,
};
pub use signature::{
    IgnoredSignature, IgnoredWhy, KeyId, PolicyDigest, PolicyLoadError, SignatureError,
    SignatureFile, TrustedKey, TrustedKeyFileError, VerifiedPolicy, VerifiedSignatures,
    load_policy_dir, policy_trusted_comment, verify_policy, verify_signatures,
};
pub use store::{
    Admission, Change, LastRefusal, Loaded, PolicyRefusal, PolicyStore, StateError,
    StoredPolicyState, Validity, admit,
};
