//! Camera URLs as they may appear in logs and errors: never with credentials.

use url::Url;

/// Query parameters some cameras accept credentials in (Dahua `?user=&password=`, some
/// NVRs `?token=`); their values are redacted. The configuration refuses them, this is
/// the second line.
const CREDENTIAL_QUERY_KEYS: &[&str] = &[
    "user", "username", "login", "pass", "password", "passwd", "pwd", "token", "auth", "key",
];

/// What replaces a secret in logs.
const REDACTED: &str = "<redacted>";

/// What replaces a credential in a URL query (brackets would be percent-encoded there).
const REDACTED_QUERY_VALUE: &str = "redacted";

/// `url` without user name or password, and with the values of credential-looking query
/// parameters replaced by `redacted`: the form every log line and error uses.
pub fn redact_url(url: &Url) -> String {
    let mut shown = without_userinfo(url);
    if shown.query().is_some() {
        let pairs: Vec<(String, String)> = shown
            .query_pairs()
            .map(|(k, v)| {
                let value = if is_credential_key(&k) {
                    REDACTED_QUERY_VALUE.to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), value)
            })
            .collect();
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    shown.into()
}

/// `url` with its user name and password removed: what the RTSP client is given
/// (credentials travel separately, through Digest or Basic authentication).
pub(crate) fn without_userinfo(url: &Url) -> Url {
    let mut clean = url.clone();
    // Both fail only for URLs that cannot have a host, hence no userinfo to remove.
    let _ = clean.set_password(None);
    let _ = clean.set_username("");
    clean
}

/// The secrets that must never reach a log: the password, and the values of
/// credential-looking query parameters.
pub(crate) fn secrets(url: &Url, password: Option<&str>) -> Vec<String> {
    let mut secrets: Vec<String> = url
        .query_pairs()
        .filter(|(k, v)| is_credential_key(k) && !v.is_empty())
        .map(|(_, v)| v.into_owned())
        .collect();
    secrets.extend(url.password().map(str::to_owned));
    secrets.extend(password.filter(|p| !p.is_empty()).map(str::to_owned));
    secrets
}

/// `text` (an RTSP client's error message) on one line, each secret replaced by
/// `<redacted>`.
pub(crate) fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for secret in secrets {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), REDACTED);
        }
    }
    out
}

fn is_credential_key(key: &str) -> bool {
    CREDENTIAL_QUERY_KEYS
        .iter()
        .any(|k| key.eq_ignore_ascii_case(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn userinfo_is_removed() {
        let u = url("rtsp://admin:hunter2@192.0.2.10:554/Streaming/Channels/101");
        let shown = redact_url(&u);
        assert_eq!(shown, "rtsp://192.0.2.10:554/Streaming/Channels/101");
        let user_only = url("rtsp://admin@cam.example/live");
        assert_eq!(redact_url(&user_only), "rtsp://cam.example/live");
        assert_eq!(
            without_userinfo(&u).as_str(),
            "rtsp://192.0.2.10:554/Streaming/Channels/101"
        );
    }

    #[test]
    fn credential_query_values_are_redacted_and_others_kept() {
        let u = url(
            "rtsp://192.0.2.11/cam/realmonitor?channel=1&subtype=0&user=admin&Password=s3cr%40t",
        );
        let shown = redact_url(&u);
        assert!(!shown.contains("admin"), "{shown}");
        assert!(!shown.contains("s3cr"), "{shown}");
        assert!(shown.contains("channel=1"), "{shown}");
        assert!(shown.contains("subtype=0"), "{shown}");
        assert!(shown.contains("Password=redacted"), "{shown}");
        assert!(shown.contains("user=redacted"), "{shown}");
        // A URL without any of that is unchanged.
        let plain = url("rtsp://192.0.2.12:8554/metz/cam-1");
        assert_eq!(redact_url(&plain), plain.as_str());
    }

    #[test]
    fn scrub_removes_every_secret_and_joins_lines() {
        let u = url("rtsp://192.0.2.11/live?token=abc123xyz");
        let secrets = secrets(&u, Some("hunter2"));
        assert_eq!(secrets, ["abc123xyz", "hunter2"]);
        let text = "401 response to DESCRIBE CSeq=1: bad\n\nconn: 1 rtsp://192.0.2.11/live?token=abc123xyz pw hunter2";
        let clean = scrub(text, &secrets);
        assert!(
            !clean.contains("abc123xyz") && !clean.contains("hunter2"),
            "{clean}"
        );
        assert!(!clean.contains('\n'), "{clean}");
        assert!(
            clean.starts_with("401 response to DESCRIBE CSeq=1: bad conn: 1"),
            "{clean}"
        );
        // An empty password is not a secret (it would match everywhere).
        assert!(super::secrets(&url("rtsp://h/p"), Some("")).is_empty());
    }
}
