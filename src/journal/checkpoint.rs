//! Signed checkpoints: `{journal, head_seq, head_hash, at}` signed with the journal key
//! (Ed25519 through minisign), verified with its public key. Pure: no I/O, no clock.
//!
//! The signed text is one line, [`canonical_text`]:
//! `passerelle-journal-checkpoint/1\tjournal:<id>\tseq:<n>\thead:<hex>\ttime:<unix s>`. It is
//! both the data signed (prehashed, as `minisign -S` does by default) and the trusted
//! comment, so that `minisign -V -p journal.pub -m checkpoint.txt -x checkpoint.minisig`
//! on the text and [`Checkpoint::minisig_text`] prints it back.

use jiff::Timestamp;

use super::record::{
    Checkpoint, JournalId, LineHash, PeerCheckpoint, Seq, Signature64, base64_decode,
};
use crate::ids::SiteId;
use crate::policy::{KeyError, KeyId, SignatureFile, SigningKey, TrustedKey, verify_signatures};

/// The first field of the canonical text: names the format and its version.
pub const CHECKPOINT_FORMAT: &str = "passerelle-journal-checkpoint/1";

/// What a checkpoint states, before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointFacts {
    /// The journal.
    pub journal: JournalId,
    /// The last record covered.
    pub head_seq: Seq,
    /// Its line hash.
    pub head_hash: LineHash,
    /// When, whole seconds.
    pub at: Timestamp,
}

/// The one line that is signed.
pub fn canonical_text(facts: &CheckpointFacts) -> String {
    format!(
        "{CHECKPOINT_FORMAT}\tjournal:{}\tseq:{}\thead:{}\ttime:{}",
        facts.journal,
        facts.head_seq,
        facts.head_hash,
        facts.at.as_second()
    )
}

/// Why a checkpoint does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Signed by another key than the one given.
    #[error("signed by key {found}, not by the journal key {expected}")]
    WrongKey {
        /// The key id in the record.
        found: String,
        /// The journal public key's id.
        expected: KeyId,
    },
    /// The signature does not verify: the checkpoint was altered or forged.
    #[error("the signature does not verify (altered or forged checkpoint)")]
    BadSignature,
    /// `at` has a fraction of a second: never written so, the record was altered.
    #[error("the signed time is not whole seconds")]
    FractionalTime,
}

/// Signs `facts` with the journal key. `facts.at` is truncated to the second.
pub fn sign(facts: &CheckpointFacts, key: &SigningKey) -> Result<Checkpoint, KeyError> {
    let at = Timestamp::from_second(facts.at.as_second()).unwrap_or(facts.at);
    let facts = CheckpointFacts {
        at,
        ..facts.clone()
    };
    let text = canonical_text(&facts);
    let minisig = key.sign(text.as_bytes(), &text)?;
    let (signature, global_signature) = split_minisig(&minisig)
        .ok_or_else(|| KeyError::Minisign("unexpected minisign signature layout".to_owned()))?;
    Ok(Checkpoint {
        journal: facts.journal,
        head_seq: facts.head_seq,
        head_hash: facts.head_hash,
        at,
        key: key.key_id().to_string(),
        signature,
        global_signature,
    })
}

/// The Ed25519 signature and the global signature of a `.minisig` text.
fn split_minisig(text: &str) -> Option<(Signature64, Signature64)> {
    let mut lines = text.lines();
    lines.next()?; // untrusted comment
    let sig = base64_decode(lines.next()?.trim())?;
    lines.next()?; // trusted comment
    let global = base64_decode(lines.next()?.trim())?;
    // Algorithm (2) || key id (8) || Ed25519 signature (64).
    if sig.len() != 74 || &sig[..2] != b"ED" {
        return None;
    }
    let signature: [u8; 64] = sig[10..].try_into().ok()?;
    let global: [u8; 64] = global.try_into().ok()?;
    Some((Signature64(signature), Signature64(global)))
}

impl Checkpoint {
    /// What it states.
    pub fn facts(&self) -> CheckpointFacts {
        CheckpointFacts {
            journal: self.journal.clone(),
            head_seq: self.head_seq,
            head_hash: self.head_hash,
            at: self.at,
        }
    }

    /// The signed text.
    pub fn canonical_text(&self) -> String {
        canonical_text(&self.facts())
    }

    /// A `.minisig` file for [`Checkpoint::canonical_text`], for the standard `minisign`
    /// tool. `None` if the key id in the record is not one.
    pub fn minisig_text(&self) -> Option<String> {
        let key: KeyId = self.key.parse().ok()?;
        let mut sig = Vec::with_capacity(74);
        sig.extend_from_slice(b"ED");
        sig.extend_from_slice(key.as_bytes());
        sig.extend_from_slice(&self.signature.0);
        Some(format!(
            "untrusted comment: passerelle journal checkpoint\n{}\ntrusted comment: {}\n{}\n",
            super::record::base64_encode(&sig),
            self.canonical_text(),
            super::record::base64_encode(&self.global_signature.0),
        ))
    }

    /// One line for syslog: the signed text, then the key id and both signatures, so
    /// that the line alone rebuilds [`Checkpoint::minisig_text`].
    pub fn syslog_line(&self) -> String {
        format!(
            "{}\tkey:{}\tsignature:{}\tglobal_signature:{}",
            self.canonical_text(),
            self.key,
            super::record::base64_encode(&self.signature.0),
            super::record::base64_encode(&self.global_signature.0),
        )
    }

    /// Verifies the signature with the journal's public key.
    pub fn verify(&self, key: &TrustedKey) -> Result<(), CheckpointError> {
        let wrong_key = || CheckpointError::WrongKey {
            found: self.key.clone(),
            expected: key.id(),
        };
        if self.key.parse::<KeyId>().ok() != Some(key.id()) {
            return Err(wrong_key());
        }
        if self.at.subsec_nanosecond() != 0 {
            return Err(CheckpointError::FractionalTime);
        }
        let text = self.minisig_text().ok_or_else(wrong_key)?;
        let file = SignatureFile {
            name: "checkpoint".to_owned(),
            text,
        };
        verify_signatures(
            self.canonical_text().as_bytes(),
            &[file],
            std::slice::from_ref(key),
            1,
        )
        .map(|_| ())
        .map_err(|_| CheckpointError::BadSignature)
    }
}

impl PeerCheckpoint {
    /// The `peer_checkpoint` record of a `Checkpoint` control message from `peer`.
    pub fn from_wire(peer: &SiteId, checkpoint: &crate::control::Checkpoint) -> PeerCheckpoint {
        PeerCheckpoint {
            peer: peer.to_string(),
            journal: JournalId::new(checkpoint.journal_id.clone()),
            head_seq: checkpoint.sequence,
            head_hash: LineHash::from_bytes(checkpoint.head_hash),
            at: checkpoint.time,
            signature: Signature64(checkpoint.signature),
        }
    }
}
