//! Checkpoints in the safetensors format, so that Python's `safetensors` or plain numpy reads
//! them: an 8-byte little-endian header length N, N bytes of JSON
//! (`{"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, …,
//! "__metadata__": {"key": "value", …}}`), then the tensors' raw little-endian bytes.
//!
//! Writing is atomic: the bytes go to `<file>.tmp`, are flushed to disk, and the temp file is
//! renamed over the target, so a crash mid-write leaves the previous checkpoint intact.
//! Reading trusts nothing: every length and offset in the header is checked against the file
//! before anything is sized from it.

use crate::json::{self, Json};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One named f32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// The contents of a safetensors file: tensors in file order and the string metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    pub tensors: Vec<NamedTensor>,
    pub metadata: BTreeMap<String, String>,
}

/// The largest header accepted: far above any real one (a CIFAR model's is ~40 KB).
const MAX_HEADER: u64 = 100 << 20;

/// Writes `bytes` to `path` atomically: to a temp file beside it, flushed to disk, then renamed
/// over `path`, and the directory synced so the rename itself survives a crash. A reader sees
/// the old file or the new one, never a part; every file a run writes goes through here.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_path(path);
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Where the platform allows opening a directory.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

impl Checkpoint {
    pub fn tensor(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut header = String::from("{");
        let mut offset = 0usize;
        for t in &self.tensors {
            let end = offset + 4 * t.data.len();
            let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
            header.push_str(&format!(
                "{}:{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}},",
                json::quote(&t.name),
                shape.join(",")
            ));
            offset = end;
        }
        let meta: Vec<String> =
            self.metadata.iter().map(|(k, v)| format!("{}:{}", json::quote(k), json::quote(v))).collect();
        header.push_str(&format!("\"__metadata__\":{{{}}}}}", meta.join(",")));
        // Pad with spaces so the data starts 8-byte aligned, as the reference writer does.
        while (8 + header.len()) % 8 != 0 {
            header.push(' ');
        }
        let mut out = Vec::with_capacity(8 + header.len() + offset);
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        for t in &self.tensors {
            for v in &t.data {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    /// Parses a safetensors file's bytes. Only F32 tensors are accepted.
    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, String> {
        let Some(len_bytes) = bytes.get(..8) else {
            return Err(format!("file is {} bytes, shorter than the 8-byte header length", bytes.len()));
        };
        let n = u64::from_le_bytes(len_bytes.try_into().unwrap());
        let available = bytes.len() as u64 - 8;
        if n > available || n > MAX_HEADER {
            return Err(format!("header length {n} exceeds the {available} bytes that follow it"));
        }
        let header =
            std::str::from_utf8(&bytes[8..8 + n as usize]).map_err(|_| "header is not UTF-8".to_string())?;
        let data = &bytes[8 + n as usize..];
        let Json::Obj(entries) = json::parse(header)? else {
            return Err("header is not a JSON object".into());
        };
        let mut ck = Checkpoint::default();
        let mut spans = Vec::new();
        for (name, v) in entries {
            if name == "__metadata__" {
                let Json::Obj(kv) = v else {
                    return Err("__metadata__ is not an object".into());
                };
                for (k, v) in kv {
                    let s = v.as_str().ok_or_else(|| format!("metadata value for {k:?} is not a string"))?;
                    ck.metadata.insert(k, s.to_string());
                }
                continue;
            }
            let dtype = v
                .get("dtype")
                .and_then(Json::as_str)
                .ok_or_else(|| format!("tensor {name:?} has no dtype"))?;
            if dtype != "F32" {
                return Err(format!("tensor {name:?} has dtype {dtype}; only F32 is supported"));
            }
            let Some(Json::Arr(dims)) = v.get("shape") else {
                return Err(format!("tensor {name:?} has no shape"));
            };
            let shape: Vec<usize> = dims
                .iter()
                .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                .collect::<Option<_>>()
                .ok_or_else(|| format!("tensor {name:?} has a malformed shape"))?;
            let Some(Json::Arr(offs)) = v.get("data_offsets") else {
                return Err(format!("tensor {name:?} has no data_offsets"));
            };
            let (begin, end) = match offs.as_slice() {
                [b, e] => (b.as_u64(), e.as_u64()),
                _ => (None, None),
            };
            let (Some(begin), Some(end)) = (begin, end) else {
                return Err(format!("tensor {name:?} has malformed data_offsets"));
            };
            if begin > end || end > data.len() as u64 {
                return Err(format!(
                    "tensor {name:?} spans bytes {begin}..{end} but the data section has {} bytes (truncated file?)",
                    data.len()
                ));
            }
            let count = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
            if count.and_then(|c| c.checked_mul(4)) != Some(end - begin) {
                return Err(format!("tensor {name:?} has shape {shape:?} but {} data bytes", end - begin));
            }
            let raw = &data[begin as usize..end as usize];
            let values = raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            spans.push((begin, end));
            ck.tensors.push(NamedTensor { name, shape, data: values });
        }
        spans.sort_unstable();
        let mut pos = 0;
        for (b, e) in spans {
            if b != pos {
                return Err(format!("tensor data overlaps or leaves a gap at byte {pos}"));
            }
            pos = e;
        }
        if pos != data.len() as u64 {
            return Err(format!("{} bytes after the last tensor", data.len() as u64 - pos));
        }
        Ok(ck)
    }

    /// Writes `path` atomically ([`write_atomic`]).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        write_atomic(path, &self.to_bytes())
    }

    /// Reads and validates `path`; errors name the file.
    pub fn load(path: &Path) -> Result<Checkpoint, String> {
        let at = |e: String| format!("{}: {e}", path.display());
        if path.is_dir() {
            return Err(at("is a directory, not a checkpoint file".into()));
        }
        let bytes = fs::read(path).map_err(|e| at(e.to_string()))?;
        Checkpoint::from_bytes(&bytes).map_err(at)
    }
}

/// Where [`Checkpoint::save`] writes before renaming: `<file>.tmp` beside the target.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}
