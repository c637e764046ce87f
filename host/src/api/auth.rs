//! Bearer-token authentication of the API's state-changing requests.
//!
//! `GET` and `HEAD` stay open: they serve only what is public (signed receipts, evidence,
//! checkpoints, metrics). Every other method needs `Authorization: Bearer <token>`, the token
//! being the content of `[api] token_file` (default `<storage.dir>/api-token`, created by
//! `conclave serve` when missing). The comparison is constant-time, over SHA-256 digests so that
//! the token's length does not show either.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand_core::{OsRng, RngCore as _};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use super::{Shared, error};
use crate::config::ApiSection;

/// The token file's name in the storage folder when `[api] token_file` is not set.
pub const TOKEN_FILE: &str = "api-token";

/// Shortest token accepted from a token file.
pub const MIN_TOKEN_LEN: usize = 16;

/// What a request's bearer token must match: the SHA-256 of the secret (the secret itself is
/// not kept).
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    pub fn new(secret: &str) -> Self {
        Token {
            digest: Sha256::digest(secret.as_bytes()).into(),
        }
    }

    /// Whether `presented` is the secret, in time independent of both.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let d: [u8; 32] = Sha256::digest(presented).into();
        d.ct_eq(&self.digest).into()
    }
}

/// The token file `conclave serve` uses: `[api] token_file`, else `<storage>/api-token`.
pub fn token_path(api: &ApiSection, storage: &Path) -> PathBuf {
    api.token_file
        .clone()
        .unwrap_or_else(|| storage.join(TOKEN_FILE))
}

/// Reads the API token: from `[api] token_file` when set (it must exist), else from
/// `<storage>/api-token`, which is created (32 random bytes as hex, mode 0600) when missing.
/// Returns the token and the file it is in.
pub fn load_or_create_token(api: &ApiSection, storage: &Path) -> anyhow::Result<(String, PathBuf)> {
    let path = token_path(api, storage);
    if api.token_file.is_some() {
        let t = read_token(&path).with_context(|| format!("api.token_file {}", path.display()))?;
        return Ok((t, path));
    }
    match create_token(&path) {
        Ok(t) => {
            tracing::info!("created the API token in {}", path.display());
            Ok((t, path))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let t =
                read_token(&path).with_context(|| format!("the API token {}", path.display()))?;
            Ok((t, path))
        }
        Err(e) => Err(e).with_context(|| format!("creating the API token {}", path.display())),
    }
}

/// A token file's content, trimmed: at least [`MIN_TOKEN_LEN`] visible ASCII characters.
fn read_token(path: &Path) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path)?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "the API token {} is readable by others (mode {:o}): chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    let text = std::fs::read_to_string(path)?;
    let t = text.trim();
    if t.len() < MIN_TOKEN_LEN {
        bail!(
            "the token has {} characters, at least {MIN_TOKEN_LEN} are needed",
            t.len()
        );
    }
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("the token must be visible ASCII (no spaces or control characters)");
    }
    Ok(t.to_string())
}

/// Creates `path` (mode 0600, failing when it exists) holding a fresh token.
fn create_token(path: &Path) -> std::io::Result<String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(format!("{token}\n").as_bytes())?;
    f.sync_all()?;
    Ok(token)
}

/// Why a request's credentials are refused (`None`: accepted).
fn refusal(token: Option<&Token>, headers: &HeaderMap) -> Option<&'static str> {
    let Some(token) = token else {
        return Some("this server accepts no state-changing requests: it has no API token");
    };
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Some("state-changing requests need one Authorization: Bearer <token> header");
    };
    let bytes = value.as_bytes();
    let presented = match bytes.iter().position(|&b| b == b' ') {
        Some(i) if bytes[..i].eq_ignore_ascii_case(b"bearer") => bytes[i + 1..].trim_ascii(),
        _ => return Some("the Authorization header must be Bearer <token>"),
    };
    if token.matches(presented) {
        None
    } else {
        Some("the bearer token is not this server's API token")
    }
}

/// Middleware: requests other than `GET` and `HEAD` need the API token (401 otherwise).
pub(super) async fn require_token(State(s): State<Shared>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    match refusal(s.api.token.as_ref(), req.headers()) {
        None => next.run(req).await,
        Some(why) => {
            let mut r = error(StatusCode::UNAUTHORIZED, why);
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"conclave\""),
            );
            r.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let t = Token::new("s3cret-token-0123456789");
        assert!(refusal(Some(&t), &auth("Bearer s3cret-token-0123456789")).is_none());
        assert!(refusal(Some(&t), &auth("bearer  s3cret-token-0123456789 ")).is_none());
        assert!(refusal(Some(&t), &auth("Bearer s3cret-token-012345678")).is_some());
        assert!(refusal(Some(&t), &auth("Bearer s3cret-token-0123456789x")).is_some());
        assert!(refusal(Some(&t), &auth("Basic s3cret-token-0123456789")).is_some());
        assert!(refusal(Some(&t), &auth("Bearer")).is_some());
        assert!(refusal(Some(&t), &HeaderMap::new()).is_some());
        let mut two = auth("Bearer s3cret-token-0123456789");
        two.append(header::AUTHORIZATION, "Bearer x".parse().unwrap());
        assert!(refusal(Some(&t), &two).is_some());
        // Without a token nothing passes.
        assert!(refusal(None, &auth("Bearer s3cret-token-0123456789")).is_some());
        assert_eq!(format!("{t:?}"), "Token(..)");
    }

    #[test]
    fn the_default_token_file_is_created_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("store");
        let api = ApiSection::default();
        let (t, path) = load_or_create_token(&api, &storage).unwrap();
        assert_eq!(path, storage.join(TOKEN_FILE));
        assert_eq!(t.len(), 64);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, _) = load_or_create_token(&api, &storage).unwrap();
        assert_eq!(again, t);

        // A named file must exist and hold a usable token.
        let named = ApiSection {
            token_file: Some(dir.path().join("tok")),
            ..ApiSection::default()
        };
        let e = format!("{:#}", load_or_create_token(&named, &storage).unwrap_err());
        assert!(e.contains("api.token_file"), "{e}");
        std::fs::write(dir.path().join("tok"), "short\n").unwrap();
        assert!(load_or_create_token(&named, &storage).is_err());
        std::fs::write(dir.path().join("tok"), "  operator-chosen-token-1234\n").unwrap();
        let (t, _) = load_or_create_token(&named, &storage).unwrap();
        assert_eq!(t, "operator-chosen-token-1234");
    }
}
