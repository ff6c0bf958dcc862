//! Interoperability with the standard `minisign` tool, both ways. These tests run the real
//! tool (`minisign` on PATH; CI installs it).

use std::process::{Command, Output, Stdio};

use super::*;
use crate::policy::fixtures::CSU_POLICY;
use crate::policy::signature::{
    IgnoredWhy, PolicyLoadError, SignatureError, SignatureFile, load_policy_dir, verify_signatures,
};

fn minisign(args: &[&str], dir: &Path, stdin: Option<&str>) -> Output {
    let mut child = Command::new("minisign")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the minisign tool must be installed");
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "minisign failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn now() -> Timestamp {
    "2026-02-01T12:00:00Z".parse().unwrap()
}

/// A directory with `policy.toml` (the CSU policy).
fn policy_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    fs::write(&path, CSU_POLICY).unwrap();
    (dir, path)
}

/// `minisign -G -W`: an unencrypted key pair made by the tool.
fn tool_key(dir: &Path, name: &str) -> TrustedKey {
    ok(minisign(
        &[
            "-G",
            "-W",
            "-p",
            &format!("{name}.pub"),
            "-s",
            &format!("{name}.key"),
        ],
        dir,
        None,
    ));
    TrustedKey::from_file(&dir.join(format!("{name}.pub"))).unwrap()
}

#[test]
fn a_policy_signed_by_the_minisign_tool_is_accepted() {
    let (dir, path) = policy_dir();
    let key = tool_key(dir.path(), "x");
    // The id we read is the one the tool printed in the key file.
    let pub_text = fs::read_to_string(dir.path().join("x.pub")).unwrap();
    assert!(
        pub_text.starts_with(&format!(
            "untrusted comment: minisign public key {}",
            key.id()
        )),
        "{pub_text}"
    );

    ok(minisign(
        &["-S", "-s", "x.key", "-m", "policy.toml"],
        dir.path(),
        None,
    ));
    let loaded = load_policy_dir(&path, std::slice::from_ref(&key), 1).unwrap();
    assert_eq!(loaded.signers(), [key.id()]);
    assert_eq!(loaded.policy.serial, 7);
    assert!(loaded.signatures.trusted_comments[0].contains("file:policy.toml"));

    // Tampering after signing: refused by us (and by the tool).
    fs::write(&path, CSU_POLICY.replace("metz/**", "**")).unwrap();
    let err = load_policy_dir(&path, &[key], 1).unwrap_err();
    match err {
        PolicyLoadError::Signature {
            source:
                SignatureError::NotEnoughSignatures {
                    valid: 0, ignored, ..
                },
            ..
        } => assert_eq!(ignored[0].why, IgnoredWhy::Invalid),
        other => panic!("{other}"),
    }
    assert!(
        !minisign(
            &["-V", "-p", "x.pub", "-m", "policy.toml"],
            dir.path(),
            None
        )
        .status
        .success()
    );
}

#[test]
fn a_tool_made_key_refused_when_not_trusted() {
    let (dir, path) = policy_dir();
    let _signer = tool_key(dir.path(), "signer");
    let other = tool_key(dir.path(), "other");
    ok(minisign(
        &["-S", "-s", "signer.key", "-m", "policy.toml"],
        dir.path(),
        None,
    ));
    let err = load_policy_dir(&path, &[other], 1).unwrap_err();
    match err {
        PolicyLoadError::Signature {
            source:
                SignatureError::NotEnoughSignatures {
                    valid: 0, ignored, ..
                },
            ..
        } => assert_eq!(ignored[0].why, IgnoredWhy::UnknownKey),
        other => panic!("{other}"),
    }
}

#[test]
fn k_of_n_with_tool_signatures_in_separate_files() {
    let (dir, path) = policy_dir();
    let (alice, bob, carol) = (
        tool_key(dir.path(), "alice"),
        tool_key(dir.path(), "bob"),
        tool_key(dir.path(), "carol"),
    );
    let trusted = [alice.clone(), bob.clone(), carol];
    ok(minisign(
        &["-S", "-s", "alice.key", "-m", "policy.toml"],
        dir.path(),
        None,
    ));
    // k - 1 of k: refused.
    let err = load_policy_dir(&path, &trusted, 2).unwrap_err();
    assert!(
        matches!(
            err,
            PolicyLoadError::Signature {
                source: SignatureError::NotEnoughSignatures {
                    valid: 1,
                    required: 2,
                    ..
                },
                ..
            }
        ),
        "{err}"
    );
    // The second signer, as DESIGN.md documents it: `-x policy.toml.<signer>.minisig`.
    ok(minisign(
        &[
            "-S",
            "-s",
            "bob.key",
            "-m",
            "policy.toml",
            "-x",
            "policy.toml.bob.minisig",
        ],
        dir.path(),
        None,
    ));
    let loaded = load_policy_dir(&path, &trusted, 2).unwrap();
    let mut want = vec![alice.id(), bob.id()];
    want.sort();
    assert_eq!(loaded.signers(), want);
    // Alice signing again in a third file does not make a third signer.
    ok(minisign(
        &[
            "-S",
            "-s",
            "alice.key",
            "-m",
            "policy.toml",
            "-x",
            "policy.toml.alice2.minisig",
        ],
        dir.path(),
        None,
    ));
    let err = load_policy_dir(&path, &trusted, 3).unwrap_err();
    assert!(
        matches!(
            err,
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
fn our_keygen_and_sign_are_accepted_by_the_minisign_tool() {
    let (dir, path) = policy_dir();
    let files = keygen(dir.path(), "csu-officer", None).unwrap();
    assert_eq!(files.public, dir.path().join("csu-officer.pub"));
    assert_eq!(files.secret, dir.path().join("csu-officer.key"));
    let key = SigningKey::from_file(&files.secret, None).unwrap();
    assert_eq!(key.key_id(), files.key_id);

    let sig_path = sign_policy_file(&path, &key, None, now()).unwrap();
    assert_eq!(sig_path, dir.path().join("policy.toml.minisig"));
    let out = ok(minisign(
        &["-V", "-p", "csu-officer.pub", "-m", "policy.toml"],
        dir.path(),
        None,
    ));
    assert!(
        out.contains("Signature and comment signature verified"),
        "{out}"
    );
    let comment = format!(
        "Trusted comment: timestamp:{}\tfile:policy.toml\tsite:csu.metz.example\tserial:7",
        now().as_second()
    );
    assert!(out.contains(&comment), "{out}");
    // Prehashed, so `-H` (require prehashed) accepts it too.
    ok(minisign(
        &["-V", "-H", "-p", "csu-officer.pub", "-m", "policy.toml"],
        dir.path(),
        None,
    ));

    // A named signer writes policy.toml.<signer>.minisig, which the tool verifies with -x.
    let second = keygen(dir.path(), "sncf", None).unwrap();
    let sncf = SigningKey::from_file(&second.secret, None).unwrap();
    let sig2 = sign_policy_file(&path, &sncf, Some("sncf"), now()).unwrap();
    assert_eq!(sig2, dir.path().join("policy.toml.sncf.minisig"));
    ok(minisign(
        &[
            "-V",
            "-p",
            "sncf.pub",
            "-m",
            "policy.toml",
            "-x",
            "policy.toml.sncf.minisig",
        ],
        dir.path(),
        None,
    ));
    // Wrong key: the tool refuses.
    assert!(
        !minisign(
            &["-V", "-p", "sncf.pub", "-m", "policy.toml"],
            dir.path(),
            None
        )
        .status
        .success()
    );

    // And our own loader accepts both, 2 of 2.
    let trusted = [
        TrustedKey::from_file(&files.public).unwrap(),
        TrustedKey::from_file(&second.public).unwrap(),
    ];
    let loaded = load_policy_dir(&path, &trusted, 2).unwrap();
    assert_eq!(loaded.signers().len(), 2);

    // Tampered: the tool refuses too.
    fs::write(&path, CSU_POLICY.replace("serial = 7", "serial = 70")).unwrap();
    assert!(
        !minisign(
            &["-V", "-p", "csu-officer.pub", "-m", "policy.toml"],
            dir.path(),
            None
        )
        .status
        .success()
    );
}

#[test]
fn our_unencrypted_secret_key_works_in_the_minisign_tool() {
    let dir = tempfile::tempdir().unwrap();
    let files = keygen(dir.path(), "k", None).unwrap();
    let data = b"some bytes\n";
    fs::write(dir.path().join("f"), data).unwrap();
    ok(minisign(
        &["-S", "-W", "-s", "k.key", "-m", "f"],
        dir.path(),
        None,
    ));
    let text = fs::read_to_string(dir.path().join("f.minisig")).unwrap();
    let trusted = [TrustedKey::from_file(&files.public).unwrap()];
    let sigs = [SignatureFile {
        name: "f.minisig".into(),
        text,
    }];
    let v = verify_signatures(data, &sigs, &trusted, 1).unwrap();
    assert_eq!(v.signers, [files.key_id]);
    // `minisign -R` recreates the same public key from our secret key.
    ok(minisign(
        &["-R", "-s", "k.key", "-p", "k2.pub"],
        dir.path(),
        None,
    ));
    let recreated = TrustedKey::from_file(&dir.path().join("k2.pub")).unwrap();
    assert_eq!(recreated.id(), files.key_id);
}

#[test]
fn a_tool_made_unencrypted_secret_key_signs_here() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = tool_key(dir.path(), "t");
    let key = SigningKey::from_file(&dir.path().join("t.key"), None).unwrap();
    assert_eq!(key.key_id(), trusted.id());
    // Asking for a password on an unencrypted key is a mistake worth reporting.
    assert!(matches!(
        SigningKey::from_file(&dir.path().join("t.key"), Some("pw")),
        Err(KeyError::NotEncrypted)
    ));
    fs::write(dir.path().join("f"), b"data").unwrap();
    fs::write(
        dir.path().join("f.minisig"),
        key.sign(b"data", "hello").unwrap(),
    )
    .unwrap();
    let out = ok(minisign(
        &["-V", "-p", "t.pub", "-m", "f"],
        dir.path(),
        None,
    ));
    assert!(out.contains("Trusted comment: hello"), "{out}");
}

#[test]
fn encrypted_keys_need_their_password() {
    let dir = tempfile::tempdir().unwrap();
    let files = keygen(dir.path(), "enc", Some("correct horse")).unwrap();
    let secret_text = fs::read_to_string(&files.secret).unwrap();
    let plain_text = SigningKey::generate()
        .unwrap()
        .secret_key_text_unencrypted();
    assert_ne!(
        secret_text.lines().nth(1).unwrap().get(..8),
        plain_text.lines().nth(1).unwrap().get(..8),
        "kdf marked"
    );
    assert!(matches!(
        SigningKey::from_file(&files.secret, None),
        Err(KeyError::PasswordRequired)
    ));
    assert!(matches!(
        SigningKey::from_file(&files.secret, Some("wrong")),
        Err(KeyError::WrongPassword)
    ));
    let key = SigningKey::from_file(&files.secret, Some("correct horse")).unwrap();
    assert_eq!(key.key_id(), files.key_id);

    // The tool decrypts it with the same password (read from stdin) and signs; we verify.
    fs::write(dir.path().join("f"), b"data").unwrap();
    ok(minisign(
        &["-S", "-s", "enc.key", "-m", "f"],
        dir.path(),
        Some("correct horse\n"),
    ));
    let text = fs::read_to_string(dir.path().join("f.minisig")).unwrap();
    let trusted = [TrustedKey::from_file(&files.public).unwrap()];
    let sigs = [SignatureFile {
        name: "f.minisig".into(),
        text,
    }];
    assert!(verify_signatures(b"data", &sigs, &trusted, 1).is_ok());
    // ... and refuses a wrong password.
    assert!(
        !minisign(
            &["-S", "-s", "enc.key", "-m", "f", "-x", "g.minisig"],
            dir.path(),
            Some("nope\n")
        )
        .status
        .success()
    );
    assert!(matches!(
        keygen(dir.path(), "blank", Some("")),
        Err(KeyError::BlankPassword)
    ));
}

#[test]
fn keygen_never_overwrites_and_protects_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let first = keygen(dir.path(), "k", None).unwrap();
    let before = fs::read(&first.secret).unwrap();
    assert!(matches!(
        keygen(dir.path(), "k", None),
        Err(KeyError::Exists { .. })
    ));
    assert_eq!(fs::read(&first.secret).unwrap(), before);
    // A stray public key alone also blocks.
    fs::write(dir.path().join("p.pub"), b"x").unwrap();
    assert!(matches!(
        keygen(dir.path(), "p", None),
        Err(KeyError::Exists { .. })
    ));
    assert!(!dir.path().join("p.key").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(&first.secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "secret key readable by others: {mode:o}");
    }
    for bad in ["", "a/b", "../k", "k.key", "k k"] {
        assert!(
            matches!(keygen(dir.path(), bad, None), Err(KeyError::BadName(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn an_invalid_policy_is_never_signed() {
    let (dir, path) = policy_dir();
    fs::write(
        &path,
        CSU_POLICY.replace("mode = \"live\"", "mode = \"sometimes\""),
    )
    .unwrap();
    let key = SigningKey::generate().unwrap();
    let err = sign_policy_file(&path, &key, None, now()).unwrap_err();
    assert!(matches!(err, KeyError::InvalidPolicy { .. }), "{err}");
    assert!(err.to_string().contains("grant[0].mode"), "{err}");
    assert!(!dir.path().join("policy.toml.minisig").exists());
}

#[test]
fn signing_again_replaces_the_signature_atomically() {
    let (dir, path) = policy_dir();
    let key = SigningKey::generate().unwrap();
    let first = sign_policy_file(&path, &key, None, now()).unwrap();
    let later: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
    sign_policy_file(&path, &key, None, later).unwrap();
    let text = fs::read_to_string(&first).unwrap();
    assert!(
        text.contains(&format!("timestamp:{}", later.as_second())),
        "{text}"
    );
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "no temporary file left behind: {names:?}");
}

#[test]
fn signature_paths() {
    let p = Path::new("/etc/passerelle/policy.toml");
    assert_eq!(
        signature_path(p, None).unwrap(),
        Path::new("/etc/passerelle/policy.toml.minisig")
    );
    assert_eq!(
        signature_path(p, Some("sncf")).unwrap(),
        Path::new("/etc/passerelle/policy.toml.sncf.minisig")
    );
    assert!(matches!(
        signature_path(p, Some("a.b")),
        Err(KeyError::BadName(_))
    ));
    assert!(matches!(
        signature_path(p, Some("../x")),
        Err(KeyError::BadName(_))
    ));
}

#[test]
fn password_files_lose_one_final_newline() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[u8], Option<&str>); 5] = [
        (b"secret\n", Some("secret")),
        (b"secret\r\n", Some("secret")),
        (b"secret", Some("secret")),
        (b" secret \n\n", Some(" secret \n")),
        (b"\n", None),
    ];
    for (i, (content, want)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("pw{i}"));
        fs::write(&path, content).unwrap();
        match (read_password_file(&path), want) {
            (Ok(got), Some(want)) => assert_eq!(got, want),
            (Err(KeyError::EmptyPassword { .. }), None) => {}
            (other, _) => panic!("{content:?}: {other:?}"),
        }
    }
    assert!(matches!(
        read_password_file(&dir.path().join("none")),
        Err(KeyError::Io { .. })
    ));
}

#[test]
fn trusted_comments_are_one_line() {
    let key = SigningKey::generate().unwrap();
    assert!(matches!(
        key.sign(b"x", "a\nb"),
        Err(KeyError::MultiLineComment)
    ));
    assert!(matches!(
        key.sign(b"x", "a\rb"),
        Err(KeyError::MultiLineComment)
    ));
    assert!(key.sign(b"x", "a\tb").is_ok());
}

#[test]
fn a_damaged_secret_key_is_refused_at_load() {
    let text = SigningKey::generate()
        .unwrap()
        .secret_key_text_unencrypted();
    let line = text.lines().nth(1).unwrap();
    let mut bytes = BASE64.decode(line).unwrap();
    // First byte of the Ed25519 seed: sig_alg, kdf_alg, chk_alg (2 each), salt (32),
    // limits (8 + 8), key id (8) come before it.
    bytes[62] ^= 0x01;
    let damaged = format!("untrusted comment: x\n{}\n", BASE64.encode(&bytes));
    assert!(matches!(
        SigningKey::from_secret_key_text(&damaged, None),
        Err(KeyError::BadSecretKey(_))
    ));
    // The undamaged text loads.
    assert!(SigningKey::from_secret_key_text(&text, None).is_ok());
    for bad in [
        "",
        "untrusted comment: x\n",
        "untrusted comment: x\nnot base64!\n",
        "untrusted comment: x\nRWQAAA==\n",
    ] {
        assert!(
            matches!(
                SigningKey::from_secret_key_text(bad, None),
                Err(KeyError::BadSecretKey(_))
            ),
            "{bad:?}"
        );
    }
}
