//! The webhook key's file: one line, the exact `Authorization` value, mode 0600. Made once (a temporary
//! file renamed into place, never over an existing one) and reused after, so that a second
//! `setup webhook` changes nothing; read by the relay's config as `${file:PATH}`.

use std::io::Write;
use std::path::Path;

use super::SetupError;
use crate::secret::Secret;

/// The key in `path`, if the file exists: its one line. A file others may read is refused.
pub fn read_key(path: &Path) -> Result<Option<Secret>, SetupError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(SetupError::KeyFile(format!(
                "cannot read the key file {}: {e}",
                path.display()
            )))
        }
    };
    check_private(path)?;
    let key = text.trim_end_matches(['\n', '\r']);
    if key.is_empty() || key.contains(['\n', '\r']) {
        return Err(SetupError::KeyFile(format!(
            "the key file {} should hold one line (the Authorization value): remove it to make a new key",
            path.display()
        )));
    }
    Ok(Some(Secret(key.to_string())))
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), SetupError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| SetupError::KeyFile(format!("{}: {e}", path.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(SetupError::KeyFile(format!(
            "the key file {} may be read by others (mode {:o}): chmod 600 it",
            path.display(),
            mode & 0o777
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path) -> Result<(), SetupError> {
    Ok(())
}

/// Writes a new key file: a temporary file of mode 0600 beside it, renamed into place. An existing file
/// is never replaced.
pub fn write_key(path: &Path, key: &Secret) -> Result<(), SetupError> {
    let fail = |e: std::io::Error| {
        SetupError::KeyFile(format!("cannot write the key file {}: {e}", path.display()))
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(fail)?;
    if path.exists() {
        return Err(fail(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "it appeared meanwhile; run again to reuse it",
        )));
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let written = opts.open(&tmp).and_then(|mut f| {
        f.write_all(format!("{}\n", key.expose()).as_bytes())?;
        f.sync_all()
    });
    // A hard link, unlike a rename, never replaces a file that appeared meanwhile: it fails.
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    linked.map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => fail(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "it appeared meanwhile; run again to reuse it",
        )),
        _ => fail(e),
    })
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_key_is_written_private_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/webhook-psk");
        assert!(read_key(&path).unwrap().is_none());
        let key = Secret("Bearer 00ff".into());
        write_key(&path, &key).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "Bearer 00ff\n");
        assert_eq!(read_key(&path).unwrap(), Some(key));
        // Never replaced, and no temporary file left behind.
        assert!(write_key(&path, &Secret("Bearer other".into())).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "Bearer 00ff\n");
        assert_eq!(
            std::fs::read_dir(dir.path().join("data")).unwrap().count(),
            1
        );
    }

    #[test]
    fn a_key_file_others_may_read_or_of_several_lines_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("psk");
        std::fs::write(&path, "Bearer x\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_key(&path).unwrap_err().to_string();
        assert!(e.contains("may be read by others (mode 644)"), "{e}");
        assert!(!e.contains("Bearer x"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "a\nb\n").unwrap();
        let e = read_key(&path).unwrap_err().to_string();
        assert!(e.contains("should hold one line"), "{e}");
    }
}
