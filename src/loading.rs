//! Everything a user can say about their model besides its bytes: the architecture, class names,
//! input size and normalization, and an ONNX file's external weights. The CLI and the JS API both
//! parse their flags/options into `ModelSettings`, so the checks and messages are the same in both.

use crate::arch::Arch;
use crate::error::Result;
use crate::explainer::Model;
use crate::fail;
use crate::imaging::preprocess::Normalize;

/// Class names a labels file may hold, at most (ImageNet-21k has 21841).
const MAX_LABELS: usize = 100_000;
/// Bytes one class name may take.
const MAX_LABEL_BYTES: usize = 1_000;

#[derive(Clone, Debug, Default)]
pub struct ModelSettings {
    /// The architecture, when detection from the file's keys should be overridden.
    pub arch: Option<Arch>,
    /// One name per class.
    pub labels: Option<Vec<String>>,
    /// The square input size the network is fed (the centre crop).
    pub input_size: Option<usize>,
    pub normalize: Option<Normalize>,
    /// The `.onnx.data` file of an ONNX model whose weights are stored outside the `.onnx`.
    pub external_data: Option<Vec<u8>>,
}

impl ModelSettings {
    /// Loads a model file (safetensors, `.pth` zip or legacy, ONNX) and applies the settings.
    pub fn load(&self, bytes: &[u8]) -> Result<Model> {
        self.apply(load_model_file(bytes, self.arch, self.external_data.as_deref())?)
    }

    /// Applies labels, input size and normalization to a loaded model.
    pub fn apply(&self, mut model: Model) -> Result<Model> {
        if let Some(labels) = &self.labels {
            model = model.with_labels(labels.clone())?;
        }
        if let Some(size) = self.input_size {
            model = model.with_input_size(size)?;
        }
        if let Some(n) = &self.normalize {
            model = model.with_normalize(n.clone())?;
        }
        Ok(model)
    }
}

fn load_model_file(bytes: &[u8], arch: Option<Arch>, external_data: Option<&[u8]>) -> Result<Model> {
    if crate::onnx::is_onnx(bytes) {
        if arch.is_some() {
            return fail!(Option, "an ONNX file carries its own graph; drop the architecture setting");
        }
        return Model::from_onnx(bytes, external_data);
    }
    if external_data.is_some() {
        return fail!(Option, "external data was given, but the model file is not an ONNX file; pass only the model file");
    }
    Model::from_bytes(bytes, arch)
}

/// Class names from a labels file: a JSON array of strings, or one name per line (blank lines
/// at the end ignored).
pub fn parse_labels(text: &str) -> Result<Vec<String>> {
    let trimmed = text.trim_start_matches('\u{feff}').trim();
    if trimmed.is_empty() {
        return fail!(Option, "the labels file is empty; give a JSON array of names or one name per line");
    }
    let labels: Vec<String> = if trimmed.starts_with('[') {
        serde_json::from_str(trimmed).map_err(|e| crate::Error::Option(format!("the labels file starts with '[' but is not a JSON array of strings ({e})")))?
    } else {
        trimmed.lines().map(|l| l.trim_end_matches('\r').to_string()).collect()
    };
    if labels.is_empty() {
        return fail!(Option, "the labels file holds no names (an empty JSON array); give one name per class");
    }
    check_labels(&labels)?;
    Ok(labels)
}

/// Bounds the count and length of class names before they are kept.
pub fn check_labels(labels: &[String]) -> Result<()> {
    if labels.len() > MAX_LABELS {
        return fail!(Option, "{} labels given; at most {MAX_LABELS} are accepted", labels.len());
    }
    if let Some(i) = labels.iter().position(|l| l.len() > MAX_LABEL_BYTES) {
        return fail!(Option, "label {i} is {} bytes long; at most {MAX_LABEL_BYTES} are accepted", labels[i].len());
    }
    Ok(())
}

/// Three numbers from "a,b,c" (a mean or std per RGB channel); one number means all three.
pub fn parse_triple(what: &str, text: &str) -> Result<[f32; 3]> {
    let values: Vec<f32> = text
        .split(',')
        .map(|v| v.trim().parse::<f32>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| crate::Error::Option(format!("{what} takes one number or three comma-separated numbers (R,G,B), got '{text}'")))?;
    match values[..] {
        [v] => Ok([v; 3]),
        [r, g, b] => Ok([r, g, b]),
        _ => fail!(Option, "{what} takes one number or three comma-separated numbers (R,G,B), got {} numbers", values.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_files_are_json_arrays_or_lines() {
        assert_eq!(parse_labels("[\"cat\", \"dog\"]").unwrap(), vec!["cat", "dog"]);
        assert_eq!(parse_labels("cat\r\ndog\n\n").unwrap(), vec!["cat", "dog"]);
        assert!(parse_labels("  ").unwrap_err().to_string().contains("empty"));
        assert!(parse_labels("[\"cat\", 3]").unwrap_err().to_string().contains("JSON array"));
    }

    #[test]
    fn triples_take_one_or_three_numbers() {
        assert_eq!(parse_triple("--mean", "0.5").unwrap(), [0.5; 3]);
        assert_eq!(parse_triple("--mean", "0.485, 0.456,0.406").unwrap(), [0.485, 0.456, 0.406]);
        assert!(parse_triple("--std", "1,2").is_err());
        assert!(parse_triple("--std", "a").is_err());
    }
}
