//! A minimal PNG encoder: 8-bit greyscale or RGB, no interlace, every row with filter 0, the
//! image data as one zlib stream (flate2), each chunk closed by its CRC-32 (flate2's `Crc`, the
//! same CRC as PNG's). Enough for reconstruction grids and saliency maps.

use flate2::write::ZlibEncoder;
use flate2::{Compression, Crc};
use std::io::Write;

/// An 8-bit image: `channels` is 1 (grey) or 3 (RGB), pixels row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub pixels: Vec<u8>,
}

impl Image {
    pub fn new(width: usize, height: usize, channels: usize) -> Self {
        Image { width, height, channels, pixels: vec![0; width * height * channels] }
    }

    /// Sets pixel (x, y) from `rgb` (the first value only, for grey).
    pub fn set(&mut self, x: usize, y: usize, rgb: [u8; 3]) {
        let at = (y * self.width + x) * self.channels;
        self.pixels[at..at + self.channels].copy_from_slice(&rgb[..self.channels]);
    }

    /// Copies `src` with its top-left corner at (x, y), each pixel as a `scale`×`scale` block.
    pub fn blit(&mut self, src: &Image, x: usize, y: usize, scale: usize) {
        for sy in 0..src.height * scale {
            for sx in 0..src.width * scale {
                let at = ((sy / scale) * src.width + sx / scale) * src.channels;
                let mut rgb = [src.pixels[at]; 3];
                if src.channels == 3 {
                    rgb.copy_from_slice(&src.pixels[at..at + 3]);
                }
                self.set(x + sx, y + sy, rgb);
            }
        }
    }

    /// The PNG file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.channels == 1 || self.channels == 3);
        assert_eq!(self.pixels.len(), self.width * self.height * self.channels);
        let mut out = vec![0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
        let mut ihdr = Vec::with_capacity(13);
        ihdr.extend_from_slice(&(self.width as u32).to_be_bytes());
        ihdr.extend_from_slice(&(self.height as u32).to_be_bytes());
        // Bit depth 8; colour type 0 (grey) or 2 (RGB); compression, filter, interlace 0.
        ihdr.extend_from_slice(&[8, if self.channels == 3 { 2 } else { 0 }, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        for row in self.pixels.chunks_exact(self.width * self.channels) {
            z.write_all(&[0]).and_then(|_| z.write_all(row)).expect("writing to a Vec cannot fail");
        }
        chunk(&mut out, b"IDAT", &z.finish().expect("writing to a Vec cannot fail"));
        chunk(&mut out, b"IEND", &[]);
        out
    }
}

/// Appends one chunk: length, type, data, CRC-32 of type and data.
fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
}

/// A heat-map colour for v in [0, 1]: black → red → yellow → white.
pub fn heat(v: f32) -> [u8; 3] {
    let v = v.clamp(0.0, 1.0) * 3.0;
    let c = |x: f32| (x.clamp(0.0, 1.0) * 255.0).round() as u8;
    [c(v), c(v - 1.0), c(v - 2.0)]
}

/// A dataset image (u8, H×W) as a picture: grey when `rgb` is false, otherwise H×(W/3) RGB with
/// the HWC folding of CIFAR (column 3c + k is channel k of pixel c) undone.
pub fn from_dataset(pixels: &[u8], h: usize, w: usize, rgb: bool) -> Image {
    if rgb {
        Image { width: w / 3, height: h, channels: 3, pixels: pixels.to_vec() }
    } else {
        Image { width: w, height: h, channels: 1, pixels: pixels.to_vec() }
    }
}
