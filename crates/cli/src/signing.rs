//! The key `proof serve` signs proofs with: `--key`, or the store's own key
//! pair, created on the first start (`STORE/proof.key`, mode 0600, and
//! `STORE/proof.pub`) and never overwritten.

#[cfg(unix)]
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use proof_artifact::{SigningKey, VerifyingKey};

/// File names of the store's own key pair, inside the store directory.
pub const STORE_KEY: &str = "proof.key";
pub const STORE_PUB: &str = "proof.pub";
/// Directory of the proof artifacts inside the store when `--proofs` is not given.
pub const STORE_PROOFS: &str = "proofs";

/// The signing key and where it came from.
pub struct Signing {
    pub key: SigningKey,
    /// The private key file.
    pub private: PathBuf,
    /// The public key file, when known (always for the store's key).
    pub public: Option<PathBuf>,
    /// True if the key pair was created just now.
    pub created: bool,
}

/// A private key file (PKCS#8 PEM, from `proof keygen` or the store).
pub fn load_signing_key(path: &Path) -> Result<proof_artifact::SigningKey> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the private key {}", path.display()))?;
    proof_artifact::load_private_pem(&pem)
        .with_context(|| format!("{} is not a usable private key", path.display()))
}

/// Public key files (PEM), e.g. every `--key` of a verify.
pub fn load_verifying_keys(paths: &[PathBuf]) -> Result<Vec<VerifyingKey>> {
    paths
        .iter()
        .map(|p| {
            let pem = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the public key {}", p.display()))?;
            proof_artifact::load_public_pem(&pem)
                .with_context(|| format!("{} is not a usable public key", p.display()))
        })
        .collect()
}

#[cfg(unix)]
pub(crate) fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).with_context(|| format!("cannot write {}", path.display()))
}

/// The key given with `--key`.
pub fn from_file(path: &Path) -> Result<Signing> {
    Ok(Signing {
        key: load_signing_key(path)?,
        private: path.to_path_buf(),
        public: None,
        created: false,
    })
}

/// Writes `data` to `path` through a temporary file, never replacing an existing file.
fn write_new(path: &Path, data: &[u8], private: bool) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A leftover of a start that died half way; the store's writer lock is held, so
    // nobody else is writing it.
    let _ = std::fs::remove_file(&tmp);
    if private {
        write_private(&tmp, data)?;
    } else {
        std::fs::write(&tmp, data).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot sync {}", tmp.display()))?;
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked.with_context(|| format!("cannot create {} (never overwritten)", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync the directory {}", dir.display()))?;
    }
    Ok(())
}

/// The store's own key pair: loaded if it exists, created if it does not.
/// Call with the store open for writing (its lock keeps two servers from racing).
pub fn store_key(store: &Path) -> Result<Signing> {
    let private = store.join(STORE_KEY);
    let public = store.join(STORE_PUB);
    let created = if private.exists() {
        false
    } else {
        if public.exists() {
            bail!(
                "{} exists but {} does not: proofs verified with that public key could not be \
                 signed any more; restore the private key, or move {} away to have a new key \
                 pair created",
                public.display(),
                private.display(),
                public.display()
            );
        }
        let (private_pem, _) = proof_artifact::generate()?;
        write_new(&private, private_pem.as_bytes(), true)?;
        true
    };
    let key = load_signing_key(&private).with_context(|| {
        format!(
            "the store's signing key is unusable; it is never overwritten: restore it, or move \
             it away (with {}) to have a new key pair created",
            public.display()
        )
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&private)
            .with_context(|| format!("cannot stat {}", private.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            eprintln!(
                "proof serve: warning: the signing key {} is accessible to others (mode {:o}); \
                 `chmod 600` it",
                private.display(),
                mode & 0o777
            );
        }
    }
    let public_pem = proof_artifact::keys::public_key_pem(&key.verifying_key())?;
    if public.exists() {
        let on_disk = std::fs::read_to_string(&public)
            .with_context(|| format!("cannot read {}", public.display()))?;
        let matches = proof_artifact::load_public_pem(&on_disk)
            .map(|vk| vk == key.verifying_key())
            .unwrap_or(false);
        if !matches {
            bail!(
                "{} is not the public key of {}; restore the matching pair (neither file is \
                 ever overwritten)",
                public.display(),
                private.display()
            );
        }
    } else {
        write_new(&public, public_pem.as_bytes(), false)?;
    }
    Ok(Signing {
        key,
        private,
        public: Some(public),
        created,
    })
}
