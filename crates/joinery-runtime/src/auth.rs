//! Bearer tokens and what they allow. The token file holds only SHA-256
//! hashes of tokens, one per line, with the principal they stand for:
//!
//! ```text
//! # sha256(token)                                                   principal
//! 6f1ed002ab5595859014ebf0951522d9...                                 department:dfe
//! 0d9c0fc8c4e4d2d3...                                                 board:opportunity,safer_streets
//! 9a1c...                                                             board:*
//! 5e88...                                                             operator
//! ```
//!
//! The file is re-read when it changes, so tokens are added or revoked
//! without a restart. Plain tokens never touch disk on the server side.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use joinery_domain::Department;
use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A department system: may publish that department's event types.
    Department(Department),
    /// A mission board reader: may read these missions' (disclosure-controlled) figures; `None` = all.
    Board(Option<Vec<String>>),
    /// An operator: exact figures of every mission.
    Operator,
}

impl Principal {
    /// Whether this principal may read `mission`'s figures.
    pub fn may_read(&self, mission: &str) -> bool {
        match self {
            Principal::Operator => true,
            Principal::Board(None) => true,
            Principal::Board(Some(m)) => m.iter().any(|x| x == mission),
            Principal::Department(_) => false,
        }
    }
}

/// A line of the token file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {reason}")]
pub struct TokenFileError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

fn parse_principal(s: &str) -> Result<Principal, String> {
    match s.split_once(':') {
        None if s == "operator" => Ok(Principal::Operator),
        Some(("department", d)) => d
            .parse()
            .map(Principal::Department)
            .map_err(|e| e.to_string()),
        Some(("board", "*")) => Ok(Principal::Board(None)),
        Some(("board", list)) => Ok(Principal::Board(Some(
            list.split(',').map(|m| m.trim().to_owned()).collect(),
        ))),
        _ => Err(format!(
            "unknown principal `{s}`; expected department:<code>, board:<mission,...>, board:* or operator"
        )),
    }
}

/// Parses token file contents into hash → principal.
pub fn parse_tokens(path: &Path, text: &str) -> Result<HashMap<String, Principal>, TokenFileError> {
    let mut out = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: String| TokenFileError {
            path: path.to_owned(),
            line: i + 1,
            reason,
        };
        let mut parts = line.split_whitespace();
        let (Some(hash), Some(principal), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(err(
                "expected `<sha256 hex of the token> <principal>`".into()
            ));
        };
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err("the first column must be the 64-hex-digit SHA-256 of the token, never the token itself".into()));
        }
        out.insert(
            hash.to_ascii_lowercase(),
            parse_principal(principal).map_err(err)?,
        );
    }
    Ok(out)
}

/// The SHA-256 hex of a token, as written in the token file.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[derive(Debug, Default)]
struct Loaded {
    tokens: HashMap<String, Principal>,
    modified: Option<SystemTime>,
}

/// The token store, reloaded from its file when the file changes.
#[derive(Debug, Clone)]
pub struct TokenStore {
    path: PathBuf,
    loaded: Arc<RwLock<Loaded>>,
}

impl TokenStore {
    /// Loads `path`; an unreadable or invalid file is an error at start-up.
    pub fn load(path: &Path) -> anyhow::Result<TokenStore> {
        let store = TokenStore {
            path: path.to_owned(),
            loaded: Arc::default(),
        };
        store.reload()?;
        Ok(store)
    }

    fn reload(&self) -> anyhow::Result<bool> {
        let meta = std::fs::metadata(&self.path)
            .map_err(|e| anyhow::anyhow!("cannot read token file {}: {e}", self.path.display()))?;
        let modified = meta.modified().ok();
        if modified.is_some() && self.loaded.read().modified == modified {
            return Ok(false);
        }
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| anyhow::anyhow!("cannot read token file {}: {e}", self.path.display()))?;
        let tokens = parse_tokens(&self.path, &text)?;
        *self.loaded.write() = Loaded { tokens, modified };
        Ok(true)
    }

    /// Re-reads the file every `every` until `cancel` fires; a service runs
    /// it as a named task ([`crate::Service::spawn`]). A broken edit keeps
    /// the last good tokens and logs why.
    pub async fn reload_every(
        &self,
        every: Duration,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            match self.reload() {
                Ok(true) => tracing::info!(path = %self.path.display(), "token file reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "token file not reloaded; keeping the previous tokens")
                }
            }
        }
    }

    /// Re-reads the file every `every` until the process ends, on a task of
    /// its own outside any supervisor. For services not yet on
    /// [`crate::Service`]; the others run [`TokenStore::reload_every`].
    pub fn spawn_reloader(&self, every: Duration) {
        let me = self.clone();
        tokio::spawn(async move { me.reload_every(every, CancellationToken::new()).await });
    }

    /// The principal of an `Authorization` header value, if it is a valid bearer token.
    pub fn authenticate(&self, authorization: Option<&str>) -> Option<Principal> {
        let token = authorization?.strip_prefix("Bearer ")?.trim();
        if token.is_empty() {
            return None;
        }
        self.loaded.read().tokens.get(&hash_token(token)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_matched_by_hash_and_scoped() {
        let text = format!(
            "# demo\n{} department:dfe\n{} board:opportunity\n{} operator\n",
            hash_token("t-dfe"),
            hash_token("t-board"),
            hash_token("t-op")
        );
        let dir = std::env::temp_dir().join(format!("joinery-tokens-{}", std::process::id()));
        std::fs::write(&dir, text).expect("write");
        let s = TokenStore::load(&dir).expect("load");
        assert_eq!(
            s.authenticate(Some("Bearer t-dfe")),
            Some(Principal::Department(Department::Dfe))
        );
        assert_eq!(s.authenticate(Some("Bearer nope")), None);
        assert_eq!(s.authenticate(Some("t-dfe")), None);
        let board = s.authenticate(Some("Bearer t-board")).expect("board");
        assert!(board.may_read("opportunity") && !board.may_read("safer_streets"));
        std::fs::remove_file(dir).ok();
    }

    #[test]
    fn a_plain_token_in_the_file_is_refused_with_its_line() {
        let err = parse_tokens(Path::new("t"), "\nsecret department:dfe\n").unwrap_err();
        assert_eq!(err.line, 2);
    }
}
