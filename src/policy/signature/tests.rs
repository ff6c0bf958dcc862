use super::*;
use crate::policy::fixtures::CSU_POLICY;
use crate::policy::keys::SigningKey;

fn key() -> SigningKey {
    SigningKey::generate().unwrap()
}

fn trusted(keys: &[&SigningKey]) -> Vec<TrustedKey> {
    keys.iter().map(|k| k.trusted_key().unwrap()).collect()
}

fn sig(name: &str, key: &SigningKey, bytes: &[u8]) -> SignatureFile {
    SignatureFile {
        name: name.to_owned(),
        text: key.sign(bytes, "timestamp:0").unwrap(),
    }
}

fn not_enough(
    result: Result<VerifiedSignatures, SignatureError>,
) -> (usize, usize, Vec<IgnoredSignature>) {
    match result {
        Err(SignatureError::NotEnoughSignatures {
            valid,
            required,
            ignored,
        }) => (valid, required, ignored),
        other => panic!("expected NotEnoughSignatures, got {other:?}"),
    }
}

const BYTES: &[u8] = CSU_POLICY.as_bytes();

#[test]
fn one_of_one_verifies_and_reports_signer_and_digest() {
    let a = key();
    let v = verify_signatures(
        BYTES,
        &[sig("policy.toml.minisig", &a, BYTES)],
        &trusted(&[&a]),
        1,
    )
    .unwrap();
    assert_eq!(v.signers, [a.key_id()]);
    assert_eq!(v.trusted_comments, ["timestamp:0"]);
    assert!(v.ignored.is_empty());
    assert_eq!(v.digest, PolicyDigest::of(BYTES));
}

#[test]
fn digest_is_sha256_in_lower_hex() {
    // FIPS 180-2 test vector.
    assert_eq!(
        PolicyDigest::of(b"abc").to_string(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn a_tampered_policy_is_refused() {
    let a = key();
    let s = sig("policy.toml.minisig", &a, BYTES);
    let tampered = CSU_POLICY.replace("serial = 7", "serial = 8");
    let (valid, required, ignored) = not_enough(verify_signatures(
        tampered.as_bytes(),
        &[s],
        &trusted(&[&a]),
        1,
    ));
    assert_eq!((valid, required), (0, 1));
    assert_eq!(
        ignored,
        [IgnoredSignature {
            file: "policy.toml.minisig".into(),
            key_id: Some(a.key_id()),
            why: IgnoredWhy::Invalid,
        }]
    );
    // One flipped byte is enough.
    let mut flipped = BYTES.to_vec();
    flipped[10] ^= 1;
    let s = sig("policy.toml.minisig", &a, BYTES);
    assert_eq!(
        not_enough(verify_signatures(&flipped, &[s], &trusted(&[&a]), 1)).0,
        0
    );
}

#[test]
fn an_edited_trusted_comment_is_refused() {
    let a = key();
    let mut s = sig("policy.toml.minisig", &a, BYTES);
    s.text = s.text.replace(
        "trusted comment: timestamp:0",
        "trusted comment: timestamp:1",
    );
    let (valid, _, ignored) = not_enough(verify_signatures(BYTES, &[s], &trusted(&[&a]), 1));
    assert_eq!(valid, 0);
    assert_eq!(ignored[0].why, IgnoredWhy::Invalid);
}

#[test]
fn a_signature_by_an_unknown_key_is_ignored_and_reported() {
    let (a, stranger) = (key(), key());
    let sigs = [sig("policy.toml.stranger.minisig", &stranger, BYTES)];
    let (valid, required, ignored) =
        not_enough(verify_signatures(BYTES, &sigs, &trusted(&[&a]), 1));
    assert_eq!((valid, required), (0, 1));
    assert_eq!(
        ignored,
        [IgnoredSignature {
            file: "policy.toml.stranger.minisig".into(),
            key_id: Some(stranger.key_id()),
            why: IgnoredWhy::UnknownKey,
        }]
    );
    // Alongside a valid signature it does not hurt, and is still reported.
    let sigs = [sigs[0].clone(), sig("policy.toml.minisig", &a, BYTES)];
    let v = verify_signatures(BYTES, &sigs, &trusted(&[&a]), 1).unwrap();
    assert_eq!(v.signers, [a.key_id()]);
    assert_eq!(v.ignored.len(), 1);
    assert_eq!(v.ignored[0].why, IgnoredWhy::UnknownKey);
}

#[test]
fn k_of_n_counts_distinct_trusted_keys() {
    let (a, b, c) = (key(), key(), key());
    let keys = trusted(&[&a, &b, &c]);
    // 2 of 3 with two signers.
    let sigs = [
        sig("policy.toml.minisig", &a, BYTES),
        sig("policy.toml.c.minisig", &c, BYTES),
    ];
    let v = verify_signatures(BYTES, &sigs, &keys, 2).unwrap();
    let mut want = vec![a.key_id(), c.key_id()];
    want.sort();
    assert_eq!(v.signers, want);
    assert_eq!(v.trusted_comments.len(), 2);
    // k - 1 of k.
    let (valid, required, _) = not_enough(verify_signatures(BYTES, &sigs[..1], &keys, 2));
    assert_eq!((valid, required), (1, 2));
    let (valid, required, _) = not_enough(verify_signatures(BYTES, &sigs, &keys, 3));
    assert_eq!((valid, required), (2, 3));
    // No signature at all.
    assert_eq!(not_enough(verify_signatures(BYTES, &[], &keys, 1)).0, 0);
}

#[test]
fn a_key_counts_once() {
    let (a, b) = (key(), key());
    let keys = trusted(&[&a, &b]);
    let sigs = [
        sig("policy.toml.minisig", &a, BYTES),
        sig("policy.toml.again.minisig", &a, BYTES),
    ];
    let (valid, required, ignored) = not_enough(verify_signatures(BYTES, &sigs, &keys, 2));
    assert_eq!((valid, required), (1, 2));
    assert_eq!(ignored.len(), 1);
    assert_eq!(ignored[0].why, IgnoredWhy::Duplicate);
    assert_eq!(ignored[0].file, "policy.toml.again.minisig");
    // Listing the same trusted key twice does not make two keys.
    let doubled = trusted(&[&a, &a]);
    assert_eq!(
        verify_signatures(BYTES, &sigs, &doubled, 2),
        Err(SignatureError::Unreachable {
            required: 2,
            trusted: 1
        })
    );
}

#[test]
fn thresholds_are_checked() {
    let a = key();
    let sigs = [sig("policy.toml.minisig", &a, BYTES)];
    assert_eq!(
        verify_signatures(BYTES, &sigs, &trusted(&[&a]), 0),
        Err(SignatureError::ZeroRequired)
    );
    assert_eq!(
        verify_signatures(BYTES, &sigs, &[], 1),
        Err(SignatureError::Unreachable {
            required: 1,
            trusted: 0
        })
    );
}

#[test]
fn malformed_and_legacy_signatures_do_not_count() {
    let a = key();
    let good = sig("policy.toml.minisig", &a, BYTES);
    // Legacy: the same signature relabelled "Ed" (non-prehashed) is refused before any
    // verification.
    let mut lines: Vec<String> = good.text.lines().map(str::to_owned).collect();
    let mut raw = BASE64.decode(&lines[1]).unwrap();
    assert_eq!(&raw[..2], b"ED");
    raw[1] = b'd';
    lines[1] = BASE64.encode(&raw);
    let legacy = SignatureFile {
        name: "policy.toml.legacy.minisig".into(),
        text: lines.join("\n"),
    };
    let garbage = SignatureFile {
        name: "policy.toml.garbage.minisig".into(),
        text: "hello".into(),
    };
    let empty = SignatureFile {
        name: "policy.toml.empty.minisig".into(),
        text: String::new(),
    };
    let truncated = SignatureFile {
        name: "policy.toml.short.minisig".into(),
        text: good.text.lines().take(2).collect::<Vec<_>>().join("\n"),
    };
    let (valid, _, ignored) = not_enough(verify_signatures(
        BYTES,
        &[
            legacy.clone(),
            garbage.clone(),
            empty.clone(),
            truncated.clone(),
        ],
        &trusted(&[&a]),
        1,
    ));
    assert_eq!(valid, 0);
    let whys: Vec<(&str, bool)> = ignored
        .iter()
        .map(|i| (i.file.as_str(), matches!(i.why, IgnoredWhy::Malformed(_))))
        .collect();
    assert_eq!(
        whys,
        [
            ("policy.toml.legacy.minisig", false),
            ("policy.toml.garbage.minisig", true),
            ("policy.toml.empty.minisig", true),
            ("policy.toml.short.minisig", true),
        ]
    );
    assert_eq!(ignored[0].why, IgnoredWhy::Legacy);
    // They do not stop a good signature from counting.
    let v = verify_signatures(BYTES, &[garbage, legacy, good], &trusted(&[&a]), 1).unwrap();
    assert_eq!(v.signers, [a.key_id()]);
    assert_eq!(v.ignored.len(), 2);
}

#[test]
fn not_enough_signatures_names_what_did_not_count() {
    let (a, stranger) = (key(), key());
    let err = verify_signatures(
        BYTES,
        &[sig("policy.toml.x.minisig", &stranger, BYTES)],
        &trusted(&[&a]),
        1,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("0 valid signature(s) by distinct trusted keys, 1 required"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "policy.toml.x.minisig (key {}): key not trusted",
            stranger.key_id()
        )),
        "{text}"
    );
}

#[test]
fn key_ids_print_as_minisign_does() {
    // From `minisign -G`: the comment names the id, the base64 carries its bytes.
    let text = "untrusted comment: minisign public key CEDBEEE267C57A7B\n\
                RWR7esVn4u7bzlOTbUFVKq1dnH+K2onHWYwRzf2gNVzrluovPVqRdPyB\n";
    let k = TrustedKey::parse(text).unwrap();
    assert_eq!(k.id().to_string(), "CEDBEEE267C57A7B");
    assert_eq!("CEDBEEE267C57A7B".parse::<KeyId>().unwrap(), k.id());
    assert_eq!(format!("{:?}", k), "TrustedKey(CEDBEEE267C57A7B)");
    // The bare base64 form, as `minisign -P` takes it.
    let bare =
        TrustedKey::parse("RWR7esVn4u7bzlOTbUFVKq1dnH+K2onHWYwRzf2gNVzrluovPVqRdPyB").unwrap();
    assert_eq!(bare.id(), k.id());
    assert!("CEDBEEE267C57A7".parse::<KeyId>().is_err());
    assert!("CEDBEEE267C57A7G".parse::<KeyId>().is_err());
}

#[test]
fn bad_public_keys_are_refused() {
    assert_eq!(TrustedKey::parse("").unwrap_err(), KeyParseError::Missing);
    assert_eq!(
        TrustedKey::parse("untrusted comment: x\n").unwrap_err(),
        KeyParseError::Missing
    );
    assert_eq!(
        TrustedKey::parse("not base64 !").unwrap_err(),
        KeyParseError::NotAKey
    );
    // A secret key is not a public key.
    let secret = key().secret_key_text_unencrypted();
    assert_eq!(
        TrustedKey::parse(&secret).unwrap_err(),
        KeyParseError::NotAKey
    );
    // Right length, wrong algorithm.
    let mut raw = BASE64
        .decode("RWR7esVn4u7bzlOTbUFVKq1dnH+K2onHWYwRzf2gNVzrluovPVqRdPyB")
        .unwrap();
    raw[0] = b'X';
    assert_eq!(
        TrustedKey::parse(&BASE64.encode(raw)).unwrap_err(),
        KeyParseError::NotAKey
    );
}

#[test]
fn signature_file_names() {
    for (name, want) in [
        ("policy.toml.minisig", true),
        ("policy.toml.alice.minisig", true),
        ("policy.toml.alice.smith.minisig", true),
        ("policy.toml..minisig", false),
        ("policy.toml", false),
        ("policy.toml.bak", false),
        ("policy.toml.minisig.old", false),
        ("policy.tomlx.minisig", false),
        ("other.toml.minisig", false),
        ("policy.toml-alice.minisig", false),
    ] {
        assert_eq!(is_signature_name("policy.toml", name), want, "{name}");
    }
}

fn write(dir: &Path, name: &str, content: &[u8]) {
    fs::write(dir.join(name), content).unwrap();
}

#[test]
fn load_policy_dir_finds_signatures_next_to_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, stranger) = (key(), key(), key());
    let path = dir.path().join("policy.toml");
    write(dir.path(), "policy.toml", BYTES);
    write(
        dir.path(),
        "policy.toml.minisig",
        a.sign(BYTES, "site:csu.metz.example\tserial:7")
            .unwrap()
            .as_bytes(),
    );
    write(
        dir.path(),
        "policy.toml.bob.minisig",
        b.sign(BYTES, "timestamp:1").unwrap().as_bytes(),
    );
    write(
        dir.path(),
        "policy.toml.eve.minisig",
        stranger.sign(BYTES, "x").unwrap().as_bytes(),
    );
    // Not signature files of this policy: never read.
    write(dir.path(), "policy.toml.minisig.old", b"garbage");
    write(dir.path(), "other.toml.minisig", b"garbage");
    fs::create_dir(dir.path().join("policy.toml.dir.minisig")).unwrap();

    let loaded = load_policy_dir(&path, &trusted(&[&a, &b]), 2).unwrap();
    assert_eq!(loaded.path, path);
    assert_eq!(loaded.policy.serial, 7);
    assert_eq!(loaded.policy.site.as_str(), "csu.metz.example");
    let mut want = vec![a.key_id(), b.key_id()];
    want.sort();
    assert_eq!(loaded.signers(), want);
    assert_eq!(loaded.digest(), PolicyDigest::of(BYTES));
    assert_eq!(
        loaded.signatures.ignored,
        [IgnoredSignature {
            file: "policy.toml.eve.minisig".into(),
            key_id: Some(stranger.key_id()),
            why: IgnoredWhy::UnknownKey,
        }]
    );
    // 3 of 3 with only two trusted signers.
    let err = load_policy_dir(&path, &trusted(&[&a, &b, &key()]), 3).unwrap_err();
    assert!(
        matches!(
            &err,
            PolicyLoadError::Signature {
                source: SignatureError::NotEnoughSignatures {
                    valid: 2,
                    required: 3,
                    ..
                },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn signatures_are_verified_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let a = key();
    let path = dir.path().join("policy.toml");
    // Unsigned garbage: a signature error, the parser is never reached.
    write(dir.path(), "policy.toml", b"this is [not toml");
    let err = load_policy_dir(&path, &trusted(&[&a]), 1).unwrap_err();
    assert!(matches!(err, PolicyLoadError::Signature { .. }), "{err}");
    // The same garbage, validly signed: now it is parsed, and refused as invalid.
    write(
        dir.path(),
        "policy.toml.minisig",
        a.sign(b"this is [not toml", "c").unwrap().as_bytes(),
    );
    let err = load_policy_dir(&path, &trusted(&[&a]), 1).unwrap_err();
    assert!(
        matches!(
            err,
            PolicyLoadError::Invalid {
                source: PolicyError::Syntax(_),
                ..
            }
        ),
        "{err}"
    );
    // Signed but not UTF-8.
    write(dir.path(), "policy.toml", b"\xff\xfe");
    write(
        dir.path(),
        "policy.toml.minisig",
        a.sign(b"\xff\xfe", "c").unwrap().as_bytes(),
    );
    let err = load_policy_dir(&path, &trusted(&[&a]), 1).unwrap_err();
    assert!(matches!(err, PolicyLoadError::NotUtf8 { .. }), "{err}");
}

#[test]
fn a_trusted_comment_contradicting_the_policy_is_refused() {
    let a = key();
    let path = Path::new("policy.toml");
    let signed = |comment: &str| {
        [SignatureFile {
            name: "policy.toml.minisig".into(),
            text: a.sign(BYTES, comment).unwrap(),
        }]
    };
    let ok = verify_policy(
        path,
        BYTES,
        &signed("timestamp:5\tfile:policy.toml\tsite:csu.metz.example\tserial:7"),
        &trusted(&[&a]),
        1,
    );
    assert!(ok.is_ok(), "{ok:?}");
    // The minisign default comment has neither field: accepted.
    assert!(
        verify_policy(
            path,
            BYTES,
            &signed("timestamp:5\tfile:policy.toml\thashed"),
            &trusted(&[&a]),
            1
        )
        .is_ok()
    );
    let err = verify_policy(
        path,
        BYTES,
        &signed("timestamp:5\tsite:sncf.metz.example\tserial:7"),
        &trusted(&[&a]),
        1,
    )
    .unwrap_err();
    match err {
        PolicyLoadError::TrustedCommentMismatch {
            field,
            signed,
            actual,
            key_id,
            ..
        } => {
            assert_eq!(
                (field, signed.as_str(), actual.as_str()),
                ("site", "sncf.metz.example", "csu.metz.example")
            );
            assert_eq!(key_id, a.key_id());
        }
        other => panic!("{other}"),
    }
    let err = verify_policy(
        path,
        BYTES,
        &signed("site:csu.metz.example\tserial:6"),
        &trusted(&[&a]),
        1,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            PolicyLoadError::TrustedCommentMismatch {
                field: "serial",
                ..
            }
        ),
        "{err}"
    );
    let err = verify_policy(path, BYTES, &signed("serial:seven"), &trusted(&[&a]), 1).unwrap_err();
    assert!(
        matches!(
            err,
            PolicyLoadError::TrustedCommentMismatch {
                field: "serial",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = key();
    let missing = dir.path().join("missing.toml");
    let err = load_policy_dir(&missing, &trusted(&[&a]), 1).unwrap_err();
    assert!(matches!(err, PolicyLoadError::Read { .. }));
    assert!(err.to_string().contains("missing.toml"), "{err}");

    let big = dir.path().join("big.toml");
    fs::write(&big, vec![b'#'; MAX_POLICY_BYTES as usize + 1]).unwrap();
    let err = load_policy_dir(&big, &trusted(&[&a]), 1).unwrap_err();
    assert!(matches!(err, PolicyLoadError::TooLarge { .. }), "{err}");
    // At the limit it is read (and refused for lack of signatures).
    fs::write(&big, vec![b'#'; MAX_POLICY_BYTES as usize]).unwrap();
    let err = load_policy_dir(&big, &trusted(&[&a]), 1).unwrap_err();
    assert!(matches!(err, PolicyLoadError::Signature { .. }), "{err}");
}

#[test]
fn an_oversized_signature_file_is_reported_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let a = key();
    let path = dir.path().join("policy.toml");
    write(dir.path(), "policy.toml", BYTES);
    let mut huge = a.sign(BYTES, "c").unwrap().into_bytes();
    huge.resize(MAX_SIGNATURE_BYTES as usize + 1, b'\n');
    write(dir.path(), "policy.toml.minisig", &huge);
    let err = load_policy_dir(&path, &trusted(&[&a]), 1).unwrap_err();
    match err {
        PolicyLoadError::Signature {
            source: SignatureError::NotEnoughSignatures { ignored, .. },
            ..
        } => {
            assert!(
                matches!(ignored[0].why, IgnoredWhy::Malformed(_)),
                "{ignored:?}"
            );
        }
        other => panic!("{other}"),
    }
}
