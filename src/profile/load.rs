//! Reading profiles: files, the embedded ones, a directory of them.

use std::path::{Path, PathBuf};

use super::file::ProfileFile;
use super::validate::{Validator, line_of_offset};
use super::{BUILTIN, ProfileError, RelayProfile};

/// Loads and validates one profile file.
pub fn load_file(path: &Path) -> Result<RelayProfile, ProfileError> {
    let text = std::fs::read_to_string(path).map_err(|e| ProfileError {
        file: path.to_path_buf(),
        line: None,
        field: String::new(),
        reason: format!("cannot read: {e}"),
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, &stem, path, base)
}

/// Parses and validates profile text. `default_name` is used when the file
/// names none; `source` is the name errors show; relative image paths are
/// resolved against `base_dir`.
pub fn parse(
    text: &str,
    default_name: &str,
    source: &Path,
    base_dir: &Path,
) -> Result<RelayProfile, ProfileError> {
    let file: ProfileFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of_offset(text, s.start));
        let field = line
            .and_then(|l| text.lines().nth(l - 1))
            .and_then(|l| l.split_once('='))
            .map(|(k, _)| k.trim().to_owned())
            .unwrap_or_default();
        ProfileError {
            file: source.to_path_buf(),
            line,
            field,
            reason: e.message().to_owned(),
        }
    })?;
    let v = Validator {
        text,
        source,
        base_dir,
    };
    v.profile(file, default_name)
}

/// The embedded profiles, then every `*.toml` in `dir` (a file overrides an
/// embedded profile of the same name). Returns every error, not just the first.
pub fn load_all(dir: Option<&Path>) -> Result<Vec<RelayProfile>, Vec<ProfileError>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (name, text) in BUILTIN {
        let src = PathBuf::from(format!("builtin:{name}"));
        match parse(text, name, &src, Path::new(".")) {
            Ok(p) => out.push(p),
            Err(e) => errors.push(e),
        }
    }
    if let Some(dir) = dir.filter(|d| d.is_dir()) {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect(),
            Err(e) => {
                errors.push(ProfileError {
                    file: dir.to_path_buf(),
                    line: None,
                    field: String::new(),
                    reason: format!("cannot list: {e}"),
                });
                Vec::new()
            }
        };
        files.sort();
        for f in files {
            match load_file(&f) {
                Ok(p) => {
                    out.retain(|q: &RelayProfile| q.name != p.name);
                    out.push(p);
                }
                Err(e) => errors.push(e),
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}
