//! Reading a picture file into 8-bit RGB: the format from the file's bytes (not its name), the
//! first frame of an animation, the EXIF orientation applied, 16-bit samples rounded to 8 bits,
//! gray replicated, any transparency composited over white.

use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use super::jpeg;
use super::preprocess::Rgb8;
use crate::error::{Error, Result};
use crate::fsio;

/// The largest picture decoded, in pixels (about 16k × 16k): past it a file is refused before
/// its pixels are allocated.
pub const MAX_PIXELS: u64 = 1 << 28;

/// What to tell a user whose file could not be decoded.
const FIX: &str = "give a PNG, JPEG, WebP, GIF, BMP or TIFF picture, or pass --skip-bad to leave such files out (they are listed in the report)";

/// Decodes the picture at `path`.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::BadFile`] naming the file when it is not
/// a picture of a supported format, is truncated or corrupt, or is larger than [`MAX_PIXELS`].
pub fn read_rgb8(path: &Path) -> Result<Rgb8> {
    decode_rgb8(path, fsio::read(path)?)
}

/// [`read_rgb8`] on a file's bytes (an upload); `path` only names it in errors.
///
/// # Errors
/// As [`read_rgb8`].
pub fn decode_rgb8(path: &Path, bytes: Vec<u8>) -> Result<Rgb8> {
    // By content only: a file named .jpg that holds text is no picture.
    let Ok(format) = image::guess_format(&bytes) else {
        return Err(Error::bad_file(
            path,
            "not a picture in a format tandem reads",
            FIX,
        ));
    };
    if format == ImageFormat::Jpeg {
        return read_jpeg(path, &bytes);
    }
    let reader = ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut decoder = reader.into_decoder().map_err(|e| bad(path, e))?;
    let (w, h) = decoder.dimensions();
    if w as u64 * h as u64 > MAX_PIXELS {
        return Err(too_large(path, w as u64, h as u64));
    }
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 8 + (64 << 20));
    decoder.set_limits(limits).map_err(|e| bad(path, e))?;
    let orientation = decoder.orientation().map_err(|e| bad(path, e))?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| bad(path, e))?;
    image.apply_orientation(orientation);
    Ok(to_rgb8(image))
}

fn read_jpeg(path: &Path, bytes: &[u8]) -> Result<Rgb8> {
    let decoded = jpeg::decode(bytes)
        .map_err(|e| Error::bad_file(path, format!("cannot decode: {e}"), FIX))?;
    let rgb = decoded.rgb;
    if rgb.width as u64 * rgb.height as u64 > MAX_PIXELS {
        return Err(too_large(path, rgb.width as u64, rgb.height as u64));
    }
    let Some(orientation) = decoded.orientation else {
        return Ok(rgb);
    };
    let buffer = image::RgbImage::from_raw(rgb.width as u32, rgb.height as u32, rgb.data)
        .expect("the decoder checked the pixel count");
    let mut image = DynamicImage::ImageRgb8(buffer);
    image.apply_orientation(orientation);
    Ok(to_rgb8(image))
}

fn too_large(path: &Path, w: u64, h: u64) -> Error {
    Error::bad_file(
        path,
        format!("{w}×{h} pixels is more than tandem decodes ({MAX_PIXELS})"),
        "downscale the picture first, or pass --skip-bad",
    )
}

fn bad(path: &Path, e: image::ImageError) -> Error {
    Error::bad_file(path, format!("cannot decode: {e}"), FIX)
}

/// 8-bit RGB with any alpha composited over white: `(c·a + 255·(255 − a) + 127) / 255`.
pub fn to_rgb8(image: DynamicImage) -> Rgb8 {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let data = if image.color().has_alpha() {
        image
            .into_rgba8()
            .pixels()
            .flat_map(|p| {
                let a = p[3] as u32;
                let over = |c: u8| ((c as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
                [over(p[0]), over(p[1]), over(p[2])]
            })
            .collect()
    } else {
        image.into_rgb8().into_raw()
    };
    Rgb8 {
        width,
        height,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transparency_becomes_white() {
        let mut rgba = image::RgbaImage::new(3, 1);
        rgba.put_pixel(0, 0, image::Rgba([10, 20, 30, 255]));
        rgba.put_pixel(1, 0, image::Rgba([10, 20, 30, 0]));
        rgba.put_pixel(2, 0, image::Rgba([0, 100, 255, 128]));
        let rgb = to_rgb8(DynamicImage::ImageRgba8(rgba));
        // (0·128 + 255·127 + 127) / 255 = 127; (100·128 + 255·127 + 127) / 255 = 177.
        assert_eq!(rgb.data, vec![10, 20, 30, 255, 255, 255, 127, 177, 255]);
    }

    #[test]
    fn a_text_file_is_named_as_not_a_picture() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.jpg");
        std::fs::write(&path, "these are not pixels").unwrap();
        let err = read_rgb8(&path).unwrap_err().to_string();
        assert!(
            err.contains("notes.jpg") && err.contains("not a picture"),
            "{err}"
        );
    }

    #[test]
    fn a_truncated_png_is_one_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.png");
        let mut bytes = Vec::new();
        DynamicImage::ImageRgb8(image::RgbImage::new(40, 40))
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = read_rgb8(&path).unwrap_err().to_string();
        assert!(
            err.contains("cut.png") && err.contains("cannot decode"),
            "{err}"
        );
    }
}
