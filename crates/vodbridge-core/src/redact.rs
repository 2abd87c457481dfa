//! Redaction of credentials in broker URLs, so passwords never reach logs or `Debug` output.

/// `scheme://user:***@host/…` for every comma-separated URL in `urls` (NATS takes a list); a
/// URL without user information is returned as is.
#[must_use]
pub fn redact_url(urls: &str) -> String {
    urls.split(',')
        .map(|url| match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let userinfo = &url[scheme + 3..at];
                let user = userinfo.split(':').next().unwrap_or_default();
                format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
            }
            _ => url.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_and_tokens_are_redacted_in_every_url() {
        assert_eq!(
            redact_url("amqp://user:s3cret@host:5672/%2f"),
            "amqp://user:***@host:5672/%2f"
        );
        assert_eq!(redact_url("amqp://host:5672"), "amqp://host:5672");
        assert_eq!(
            redact_url("nats://a:p1@h1:4222, nats://token@h2:4222,nats://h3:4222"),
            "nats://a:***@h1:4222, nats://token:***@h2:4222,nats://h3:4222"
        );
    }
}
