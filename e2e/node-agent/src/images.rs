//! Maps container image names to locally built binaries.
//!
//! The node agent has no container runtime: an image stands for the program it would run.
//! `tokafka-broker:dev=/repo/target/debug/tokafka-broker` makes every container whose image is
//! `tokafka-broker:dev` run that binary; an entry without a tag (`tokafka-broker=...`) matches
//! any tag, so upgrade tests can map `:v1` and `:v2` to different builds and everything else
//! to a default.

use std::path::{Path, PathBuf};
use std::str::FromStr;

/// One `NAME=PATH` mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageEntry {
    pub image: String,
    pub program: PathBuf,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("image mapping {0:?} is not of the form NAME=PATH (e.g. tokafka-broker:dev=target/debug/tokafka-broker)")]
    Malformed(String),
}

impl FromStr for ImageEntry {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((image, program)) if !image.is_empty() && !program.is_empty() => Ok(ImageEntry {
                image: normalize(image),
                program: PathBuf::from(program),
            }),
            _ => Err(ImageError::Malformed(s.to_string())),
        }
    }
}

/// The table of image mappings; the first exact match wins, then the first untagged match.
#[derive(Clone, Debug, Default)]
pub struct ImageMap {
    entries: Vec<ImageEntry>,
}

impl ImageMap {
    pub fn new(entries: Vec<ImageEntry>) -> Self {
        ImageMap { entries }
    }

    /// The program an image runs, if the image is mapped.
    pub fn resolve(&self, image: &str) -> Option<&Path> {
        let image = normalize(image);
        if let Some(e) = self.entries.iter().find(|e| e.image == image) {
            return Some(&e.program);
        }
        let repo = repository(&image);
        self.entries
            .iter()
            .find(|e| !has_tag_or_digest(&e.image) && e.image == repo)
            .map(|e| e.program.as_path())
    }

    pub fn entries(&self) -> &[ImageEntry] {
        &self.entries
    }
}

/// Drops the default registry prefixes, so `docker.io/library/x:1` and `x:1` are one image.
fn normalize(image: &str) -> String {
    let image = image.strip_prefix("docker.io/").unwrap_or(image);
    let image = image.strip_prefix("library/").unwrap_or(image);
    image.to_string()
}

/// The image without its tag or digest.
fn repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].find(':') {
        Some(colon) => &image[..last_slash + colon],
        None => image,
    }
}

fn has_tag_or_digest(image: &str) -> bool {
    repository(image) != image
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[&str]) -> ImageMap {
        ImageMap::new(entries.iter().map(|e| e.parse().unwrap()).collect())
    }

    #[test]
    fn exact_tag_wins_over_untagged_default() {
        let m = map(&["broker=/b/default", "broker:v2=/b/v2"]);
        assert_eq!(m.resolve("broker:v2"), Some(Path::new("/b/v2")));
        assert_eq!(m.resolve("broker:v1"), Some(Path::new("/b/default")));
        assert_eq!(m.resolve("broker"), Some(Path::new("/b/default")));
    }

    #[test]
    fn tagged_entry_does_not_match_other_tags() {
        let m = map(&["broker:v2=/b/v2"]);
        assert_eq!(m.resolve("broker:v1"), None);
    }

    #[test]
    fn default_registry_prefix_is_ignored() {
        let m = map(&["busybox:1=/bin/busybox"]);
        assert_eq!(
            m.resolve("docker.io/library/busybox:1"),
            Some(Path::new("/bin/busybox"))
        );
    }

    #[test]
    fn registry_port_is_not_a_tag() {
        assert_eq!(
            repository("localhost:5000/broker:dev"),
            "localhost:5000/broker"
        );
        assert_eq!(repository("localhost:5000/broker"), "localhost:5000/broker");
        assert_eq!(repository("broker@sha256:abc"), "broker");
    }

    #[test]
    fn malformed_entry_is_refused() {
        assert!("no-equals-sign".parse::<ImageEntry>().is_err());
        assert!("=path".parse::<ImageEntry>().is_err());
    }
}
