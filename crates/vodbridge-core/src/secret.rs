//! Secrets in configuration: a value given inline or read from a file (a mounted Kubernetes
//! Secret), loaded the same way by the service and every sink crate.

use std::path::Path;

use crate::error::{Error, Result};

/// Reads a secret file: trailing whitespace (the newline editors add) is dropped, and an empty
/// file is refused, since an empty secret is always a mistake.
///
/// # Errors
///
/// The OS error, or `InvalidData` for an empty file.
pub fn read_secret_file(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let value = text.trim_end();
    if value.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is empty",
        ));
    }
    Ok(value.to_owned())
}

/// The secret `key` given inline or as `{key}_file`, not both: `None` when neither is set.
///
/// # Errors
///
/// [`Error::Secret`] naming the key: both given, an empty inline value, or an unreadable or
/// empty file.
pub fn inline_or_file(
    key: &str,
    inline: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<String>> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(Error::Secret(format!(
            "{key}: give the value or `{key}_file`, not both"
        ))),
        (Some(""), None) => Err(Error::Secret(format!("{key} is empty"))),
        (Some(value), None) => Ok(Some(value.to_owned())),
        (None, Some(path)) => read_secret_file(path)
            .map(Some)
            .map_err(|e| Error::Secret(format!("{key}_file {}: {e}", path.display()))),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_or_file_but_not_both_and_never_empty() {
        let dir = std::env::temp_dir().join(format!("vodbridge-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("token");
        std::fs::write(&file, "s3cret\n").expect("write");
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").expect("write");
        assert_eq!(
            inline_or_file("token", Some("x"), None)
                .expect("ok")
                .as_deref(),
            Some("x")
        );
        assert_eq!(
            inline_or_file("token", None, Some(&file))
                .expect("ok")
                .as_deref(),
            Some("s3cret"),
            "trailing newline dropped"
        );
        assert_eq!(inline_or_file("token", None, None).expect("ok"), None);
        for (inline, path, needle) in [
            (Some("x"), Some(file.as_path()), "not both"),
            (Some(""), None, "token is empty"),
            (None, Some(empty.as_path()), "empty"),
            (
                None,
                Some(Path::new("/nonexistent/token")),
                "token_file /nonexistent/token",
            ),
        ] {
            let error = inline_or_file("token", inline, path).expect_err(needle);
            assert!(error.to_string().contains(needle), "{error}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
