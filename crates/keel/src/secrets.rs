//! The master key that seals secrets at rest (see `keel_identity::domain::sealed`).

use std::{
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::Path,
};

use anyhow::Context as _;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use keel_identity::domain::sealed::MasterKey;
use secrecy::ExposeSecret as _;

use crate::config::{DatabaseSettings, Settings};

fn decode(text: &str, source: &str) -> anyhow::Result<MasterKey> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .with_context(|| format!("invalid configuration: {source}: must be 32 bytes in base64url (43 characters); generate one with `keel secret generate`"))?;
    Ok(MasterKey::from_bytes(bytes))
}

/// A new key in its configuration form.
pub fn generate() -> String {
    URL_SAFE_NO_PAD.encode(keel_identity::domain::secret::random_bytes::<32>())
}

/// `KEEL_SECRET_KEY` when set. Otherwise, in embedded (SQLite) mode, `<data_dir>/secret.key`,
/// created with mode 0600 on first start. PostgreSQL (cluster) mode requires the setting, since
/// every node must seal and open with the same key.
pub fn master_key(settings: &Settings) -> anyhow::Result<MasterKey> {
    if let Some(key) = &settings.secret_key {
        return decode(key.expose_secret(), "KEEL_SECRET_KEY");
    }
    if matches!(settings.database, DatabaseSettings::Postgres { .. }) {
        anyhow::bail!(
            "invalid configuration: KEEL_SECRET_KEY: required with PostgreSQL (every node must share it); generate one with `keel secret generate`"
        );
    }
    let path = settings.data_dir.join("secret.key");
    embedded_key(&path)
}

fn embedded_key(path: &Path) -> anyhow::Result<MasterKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => decode(&text, &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty() && !d.exists())
            {
                // The data directory holds the database and this key: only its owner enters.
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let text = generate();
            // create_new: two processes starting at once cannot both write a key.
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path);
            match created {
                Ok(mut f) => {
                    f.write_all(text.as_bytes())?;
                    f.sync_all()?;
                    decode(&text, &path.display().to_string())
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    decode(&std::fs::read_to_string(path)?, &path.display().to_string())
                }
                Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
            }
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn the_embedded_key_is_created_once_with_mode_0600_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data/secret.key");
        let a = embedded_key(&path).expect("created");
        let b = embedded_key(&path).expect("read back");
        let sealed = a.seal("ctx", b"x");
        assert_eq!(b.open("ctx", &sealed), Ok(b"x".to_vec()));
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_bad_key_names_its_source() {
        let e = decode("short", "KEEL_SECRET_KEY").expect_err("refused");
        assert!(e.to_string().contains("KEEL_SECRET_KEY"), "{e}");
        assert!(decode(&generate(), "KEEL_SECRET_KEY").is_ok());
    }
}
