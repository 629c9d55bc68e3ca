//! Secrets in configuration: a value that is read once at start-up (from
//! the environment, a config file or a key file) and handed to the code
//! that needs it, and that never reaches a log line, a panic message or a
//! config dump on the way.
//!
//! ```
//! use joinery_runtime::secret::Secret;
//!
//! let key = Secret::new(String::from("hunter2"));
//! assert_eq!(format!("{key:?} {key}"), "[redacted] [redacted]");
//! assert_eq!(key.expose(), "hunter2");
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a secret prints as, wherever it is printed.
pub const REDACTED: &str = "[redacted]";

/// A value that never prints: `Debug`, `Display` and `Serialize` all give
/// [`REDACTED`], so that a config struct holding one can be logged or shown
/// whole. Read it with [`Secret::expose`], at the one place that uses it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    /// The secret itself: call it only where the value is used, never to
    /// print it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Serialises as [`REDACTED`]: a serialised config is for showing, and must
/// not carry the secret with it.
impl<T> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Secret<T>, D::Error> {
        // The inner error may quote the value it could not read: replace it.
        T::deserialize(deserializer)
            .map(Secret)
            .map_err(|_| serde::de::Error::custom("invalid secret (its value is not shown)"))
    }
}

/// Why a secret could not be read from its file.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read (missing, not permitted, not UTF-8).
    #[error("cannot read the secret file {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is readable by its group or by others: anyone on the
    /// machine might have copied the secret.
    #[error(
        "the secret file {path} is readable by its group or by others (mode {mode:04o}); \
         make it readable by its owner only: chmod 600 {path}",
        path = path.display()
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Refuses a file that its group or others may read or write (permission
/// bits `0o077`). Does nothing where there are no Unix permissions.
pub fn check_owner_only(path: &Path) -> Result<(), SecretError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|source| SecretError::Unreadable {
                path: path.to_owned(),
                source,
            })?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretError::TooOpen {
                path: path.to_owned(),
                mode,
            });
        }
    }
    Ok(())
}

impl Secret<String> {
    /// Reads a secret from a file that only its owner may read (see
    /// [`check_owner_only`]), without surrounding whitespace (a key file
    /// usually ends with a newline).
    pub fn read_file(path: &Path) -> Result<Secret<String>, SecretError> {
        check_owner_only(path)?;
        let text = std::fs::read_to_string(path).map_err(|source| SecretError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        Ok(Secret(text.trim().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints() -> anyhow::Result<()> {
        let s = Secret::new(String::from("hunter2"));
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{s:#?}"), REDACTED);
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(serde_json::to_string(&s)?, format!("\"{REDACTED}\""));
        assert_eq!(s.expose(), "hunter2");
        Ok(())
    }

    #[test]
    fn a_secret_deserialises_and_its_errors_do_not_quote_it() {
        let s: Secret<String> = serde_json::from_str("\"hunter2\"").expect("a string");
        assert_eq!(s.expose(), "hunter2");
        let e = serde_json::from_str::<Secret<u32>>("\"hunter2\"")
            .expect_err("not a number")
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
