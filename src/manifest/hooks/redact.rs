//! What hook settings may say in reports, logs and the dry run: secrets replaced by
//! [`REDACTED`].
//!
//! Header values are never shown at all (only their names). A URL is shown, because an admin
//! needs to know which endpoint a hook called, but without the parts that carry credentials: the
//! userinfo (`user:password@`) and every query value (`?token=…`; the names stay). The URL is
//! redacted as text, so the same function serves a template as written in the manifest and a
//! rendered URL, and a malformed URL cannot make it keep a secret it failed to parse.

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// `url` with its userinfo and query values replaced by [`REDACTED`]; the scheme, host, port,
/// path, query names and fragment are kept.
pub fn url(url: &str) -> String {
    // The fragment never reaches the server; the query ends where it begins.
    let (before_fragment, fragment) = match url.find('#') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let (before_query, query) = match before_fragment.find('?') {
        Some(i) => (&before_fragment[..i], Some(&before_fragment[i + 1..])),
        None => (before_fragment, None),
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(&without_userinfo(before_query));
    if let Some(query) = query {
        out.push('?');
        let parts: Vec<String> = query
            .split('&')
            .map(|part| match part.split_once('=') {
                Some((name, value)) if !value.is_empty() => format!("{name}={REDACTED}"),
                Some((name, _)) => format!("{name}="),
                // A bare word may be a token itself (`?s3cr3t`).
                None if !part.is_empty() => REDACTED.to_owned(),
                None => String::new(),
            })
            .collect();
        out.push_str(&parts.join("&"));
    }
    out.push_str(fragment);
    out
}

/// `scheme://user:pass@host/path` → `scheme://[redacted]@host/path`.
fn without_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => format!(
            "{}{REDACTED}{}{}",
            &url[..authority_start],
            &authority[at..],
            &rest[authority_end..]
        ),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_and_query_values_are_redacted() {
        assert_eq!(
            url("https://admin:s3cret@cmdb.example:8443/api/{{ vm_id }}?token=abc&src=h2k#top"),
            "https://[redacted]@cmdb.example:8443/api/{{ vm_id }}?token=[redacted]&src=[redacted]#top"
        );
        assert_eq!(
            url("http://tok@127.0.0.1/x"),
            "http://[redacted]@127.0.0.1/x"
        );
        assert_eq!(
            url("http://h/x?s3cret&a=&&b=1"),
            "http://h/x?[redacted]&a=&&b=[redacted]"
        );
    }

    #[test]
    fn urls_without_secrets_are_unchanged() {
        for u in [
            "https://cmdb.example/x",
            "http://127.0.0.1:8080/hooks/web%2001",
            "https://h/a@b/c",
            "not a url",
        ] {
            assert_eq!(url(u), u);
        }
    }
}
