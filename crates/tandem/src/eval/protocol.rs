//! The evaluation protocols papers report, as named settings: which test images are scored
//! together, and how the folds are combined.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which images of a split are ranked against each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// The whole split at once.
    Full,
    /// Flickr30K's test set: the first 1000 images of the split, with all their captions.
    Flickr1k,
    /// MSCOCO 1K: the first 5000 images in 5 consecutive folds of 1000, metrics averaged over
    /// the folds (as VSE++ and most COCO papers report "1K test").
    Coco1k,
    /// MSCOCO 5K: the first 5000 images at once.
    Coco5k,
}

impl Protocol {
    /// Every protocol, for help texts.
    pub const ALL: [Protocol; 4] = [
        Protocol::Full,
        Protocol::Flickr1k,
        Protocol::Coco1k,
        Protocol::Coco5k,
    ];

    /// The protocol's name as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Full => "full",
            Protocol::Flickr1k => "flickr-1k",
            Protocol::Coco1k => "coco-1k",
            Protocol::Coco5k => "coco-5k",
        }
    }

    /// Parses a CLI name.
    ///
    /// # Errors
    /// [`Error::Config`] listing the known names.
    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown protocol `{name}`; choose one of {}",
                    Self::ALL.map(Protocol::name).join(", ")
                ))
            })
    }

    /// The image folds of `images` (a split's images, in split order) this protocol scores.
    ///
    /// # Errors
    /// [`Error::Config`] when the split has fewer images than the protocol needs.
    pub fn folds(self, images: &[u32]) -> Result<Vec<Vec<u32>>> {
        let (needed, fold) = match self {
            Protocol::Full => return Ok(vec![images.to_vec()]),
            Protocol::Flickr1k => (1000, 1000),
            Protocol::Coco1k => (5000, 1000),
            Protocol::Coco5k => (5000, 5000),
        };
        if images.len() < needed {
            return Err(Error::Config(format!(
                "protocol {} needs {needed} images in the split, it has {}; use --protocol full",
                self.name(),
                images.len()
            )));
        }
        Ok(images[..needed].chunks(fold).map(<[u32]>::to_vec).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_of_each_protocol() {
        let images: Vec<u32> = (0..5200).collect();
        assert_eq!(Protocol::Full.folds(&images).unwrap(), vec![images.clone()]);
        let f = Protocol::Flickr1k.folds(&images).unwrap();
        assert_eq!((f.len(), f[0].len(), f[0][999]), (1, 1000, 999));
        let c = Protocol::Coco1k.folds(&images).unwrap();
        assert_eq!(c.len(), 5);
        assert_eq!((c[3][0], c[4][999]), (3000, 4999));
        assert_eq!(Protocol::Coco5k.folds(&images).unwrap()[0].len(), 5000);
        let e = Protocol::Coco5k
            .folds(&images[..400])
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs 5000") && e.contains("has 400"), "{e}");
        assert_eq!(Protocol::parse("coco-1k").unwrap(), Protocol::Coco1k);
        assert!(Protocol::parse("coco").is_err());
    }
}
