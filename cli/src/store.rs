//! `--store`: a SQLite path, `postgres://…` or `redis://…`.

use std::path::PathBuf;
use std::sync::Arc;

use tower_withings::store::TokenStore;

use crate::Failure;

/// Opens the store named by `spec`, or the default SQLite file.
pub async fn open(spec: Option<&str>) -> Result<Arc<dyn TokenStore>, Failure> {
    let spec = match spec {
        Some(spec) => spec.to_owned(),
        None => default_path()?.to_string_lossy().into_owned(),
    };
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return Ok(Arc::new(
            tower_withings::store::PostgresStore::connect(&spec).await?,
        ));
        #[cfg(not(feature = "postgres"))]
        return Err(Failure::usage(
            "this build has no PostgreSQL store (feature `postgres`)",
        ));
    }
    if spec.starts_with("redis://") || spec.starts_with("rediss://") {
        #[cfg(feature = "redis")]
        return Ok(Arc::new(
            tower_withings::store::RedisStore::builder(&spec)
                .connect()
                .await?,
        ));
        #[cfg(not(feature = "redis"))]
        return Err(Failure::usage(
            "this build has no Redis store (feature `redis`)",
        ));
    }
    if spec.contains("://") {
        return Err(Failure::usage(format!(
            "unknown store URL scheme in {:?}: use a SQLite path, postgres://… or redis://…",
            spec.split("://").next().unwrap_or_default()
        )));
    }
    Ok(Arc::new(
        tower_withings::store::SqliteStore::open(&spec).await?,
    ))
}

/// `$XDG_DATA_HOME/tower-withings/tokens.db`, else `~/.local/share/tower-withings/tokens.db`;
/// the folder is created owner-only.
fn default_path() -> Result<PathBuf, Failure> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .ok_or_else(|| Failure::usage("no HOME or XDG_DATA_HOME: pass --store"))?;
    let dir = base.join("tower-withings");
    std::fs::create_dir_all(&dir).map_err(|e| Failure {
        code: 5,
        message: format!("cannot create {}: {e}", dir.display()),
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(dir.join("tokens.db"))
}
