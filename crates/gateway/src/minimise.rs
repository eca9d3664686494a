//! Say no more than needed: the output policy, applied in one place after every backend.
//!
//! A model declares which of its outputs holds the class scores (and optionally which holds the
//! predicted label, and the class names). A policy then decides what a caller gets:
//!
//! | policy        | outputs                                                                 |
//! |---------------|-------------------------------------------------------------------------|
//! | `label`       | `label` only: the predicted class, by name when names are configured    |
//! | `top_k = N`   | `label`, `top_k_classes` [batch, N] and `top_k_scores` [batch, N]       |
//! | `scores`      | `label` and the scores output, rounded to `round` decimals              |
//! | `raw`         | every output the model gives, as it gives it                            |
//!
//! Policies are ordered from narrow to wide (`label` < `top_k` < `scores` < `raw`; fewer classes and
//! fewer decimals are narrower). A key's policy can only narrow its model's default unless the key
//! was created with `--widen-output` by an admin. Metadata follows the same policy: callers below
//! `raw` see the tensors they will receive, not the model's internals.

use std::{fmt, str::FromStr};

use serde::Deserialize;

use crate::oip::{DataType, ModelMetadata, Tensor, TensorData, TensorMeta};

/// What a caller may receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputPolicy {
    Label,
    TopK { k: u32, round: Option<u32> },
    Scores { round: Option<u32> },
    Raw,
}

/// Output names under the minimising policies.
pub const LABEL: &str = "label";
pub const TOP_K_CLASSES: &str = "top_k_classes";
pub const TOP_K_SCORES: &str = "top_k_scores";

/// Decimals are capped: beyond 9 a rounding says nothing.
const MAX_ROUND: u32 = 9;

impl OutputPolicy {
    /// Rank for "narrower than": label 0, top_k 1, scores 2, raw 3.
    fn rank(self) -> u8 {
        match self {
            OutputPolicy::Label => 0,
            OutputPolicy::TopK { .. } => 1,
            OutputPolicy::Scores { .. } => 2,
            OutputPolicy::Raw => 3,
        }
    }

    /// True if `self` reveals no more than `other`.
    pub fn is_narrower_or_equal(self, other: OutputPolicy) -> bool {
        let round_ok = |mine: Option<u32>, theirs: Option<u32>| match (mine, theirs) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(a), Some(b)) => a <= b,
        };
        match (self, other) {
            (OutputPolicy::TopK { k: a, round: ra }, OutputPolicy::TopK { k: b, round: rb }) => {
                a <= b && round_ok(ra, rb)
            }
            (OutputPolicy::Scores { round: ra }, OutputPolicy::Scores { round: rb }) => round_ok(ra, rb),
            (OutputPolicy::TopK { round: ra, .. }, OutputPolicy::Scores { round: rb }) => round_ok(ra, rb),
            _ => self.rank() <= other.rank(),
        }
    }

    /// The narrower of two policies (for a key without the right to widen): the narrower kind,
    /// the fewer classes, and the fewer decimals, each taken on its own.
    pub fn narrowest(self, other: OutputPolicy) -> OutputPolicy {
        if self.is_narrower_or_equal(other) {
            return self;
        }
        if other.is_narrower_or_equal(self) {
            return other;
        }
        let round = |policy: OutputPolicy| match policy {
            OutputPolicy::TopK { round, .. } | OutputPolicy::Scores { round } => round,
            _ => None,
        };
        let fewer_decimals = match (round(self), round(other)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match (self, other) {
            (OutputPolicy::TopK { k: a, .. }, OutputPolicy::TopK { k: b, .. }) => {
                OutputPolicy::TopK { k: a.min(b), round: fewer_decimals }
            }
            (OutputPolicy::TopK { k, .. }, _) | (_, OutputPolicy::TopK { k, .. }) => {
                OutputPolicy::TopK { k, round: fewer_decimals }
            }
            _ => OutputPolicy::Scores { round: fewer_decimals },
        }
    }
}

impl fmt::Display for OutputPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputPolicy::Label => f.write_str("label"),
            OutputPolicy::TopK { k, round: None } => write!(f, "top_k={k}"),
            OutputPolicy::TopK { k, round: Some(round) } => write!(f, "top_k={k}:round={round}"),
            OutputPolicy::Scores { round: None } => f.write_str("scores"),
            OutputPolicy::Scores { round: Some(round) } => write!(f, "scores:round={round}"),
            OutputPolicy::Raw => f.write_str("raw"),
        }
    }
}

impl FromStr for OutputPolicy {
    type Err = String;

    /// `label`, `top_k=3`, `top_k=3:round=2`, `scores`, `scores:round=2`, `raw`.
    fn from_str(text: &str) -> Result<OutputPolicy, String> {
        let bad = || format!("'{text}' is not an output policy: use label, top_k=N[:round=D], scores[:round=D] or raw");
        let mut parts = text.trim().split(':');
        let head = parts.next().unwrap_or_default();
        let mut round = None;
        for part in parts {
            let value = part.strip_prefix("round=").ok_or_else(bad)?;
            let value: u32 = value.parse().map_err(|_| bad())?;
            if value > MAX_ROUND {
                return Err(format!("round={value} is more than {MAX_ROUND} decimals"));
            }
            round = Some(value);
        }
        match head {
            "label" if round.is_none() => Ok(OutputPolicy::Label),
            "raw" if round.is_none() => Ok(OutputPolicy::Raw),
            "scores" => Ok(OutputPolicy::Scores { round }),
            _ => {
                let k: u32 = head.strip_prefix("top_k=").ok_or_else(bad)?.parse().map_err(|_| bad())?;
                if k == 0 {
                    return Err("top_k must be at least 1".into());
                }
                Ok(OutputPolicy::TopK { k, round })
            }
        }
    }
}

/// The `[models.output]` table: which outputs mean what, and the default policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutputSpec {
    /// The output holding class scores, shape [batch, classes].
    pub scores: String,
    /// The output holding the predicted label; if absent, the label is the top score's class.
    pub label: Option<String>,
    /// Class names, in score order.
    #[serde(default)]
    pub classes: Vec<String>,
    /// The default policy for callers of this model.
    pub policy: String,
}

/// How a model's outputs are read for minimisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    pub scores: String,
    pub label: Option<String>,
    pub classes: Vec<String>,
}

impl OutputSpec {
    /// Checks the spec against the model's signature; returns the number of classes if fixed.
    pub fn check(&self, metadata: &ModelMetadata) -> Result<(), String> {
        let scores = metadata
            .outputs
            .iter()
            .find(|meta| meta.name == self.scores)
            .ok_or_else(|| format!("output.scores names '{}', which the model does not give", self.scores))?;
        if !matches!(scores.datatype, DataType::Fp32 | DataType::Fp64) || scores.shape.len() != 2 {
            return Err(format!("output.scores '{}' must be FP32 or FP64 of shape [batch, classes]", self.scores));
        }
        if !self.classes.is_empty()
            && let Some(&classes) = scores.shape.get(1)
            && classes >= 0
            && usize::try_from(classes).ok() != Some(self.classes.len())
        {
            return Err(format!(
                "output.classes lists {} names but '{}' has {classes} classes",
                self.classes.len(),
                self.scores
            ));
        }
        if let Some(label) = &self.label
            && !metadata.outputs.iter().any(|meta| &meta.name == label)
        {
            return Err(format!("output.label names '{label}', which the model does not give"));
        }
        Ok(())
    }

    fn label_meta(&self, metadata: &ModelMetadata) -> TensorMeta {
        let datatype = if self.classes.is_empty() {
            self.label
                .as_ref()
                .and_then(|label| metadata.outputs.iter().find(|meta| &meta.name == label))
                .map_or(DataType::Int64, |meta| meta.datatype)
        } else {
            DataType::Bytes
        };
        TensorMeta { name: LABEL.into(), datatype, shape: vec![-1] }
    }
}

/// The metadata a caller under `policy` may see.
pub fn metadata(policy: OutputPolicy, spec: Option<&OutputSpec>, metadata: &ModelMetadata) -> ModelMetadata {
    let Some(spec) = spec.filter(|_| policy != OutputPolicy::Raw) else {
        return metadata.clone();
    };
    let outputs = match policy {
        OutputPolicy::Label => vec![spec.label_meta(metadata)],
        OutputPolicy::TopK { k, .. } => vec![
            spec.label_meta(metadata),
            TensorMeta { name: TOP_K_CLASSES.into(), datatype: DataType::Bytes, shape: vec![-1, i64::from(k)] },
            TensorMeta { name: TOP_K_SCORES.into(), datatype: DataType::Fp32, shape: vec![-1, i64::from(k)] },
        ],
        OutputPolicy::Scores { .. } => {
            let scores = metadata.outputs.iter().filter(|meta| meta.name == spec.scores).cloned();
            std::iter::once(spec.label_meta(metadata)).chain(scores).collect()
        }
        OutputPolicy::Raw => metadata.outputs.clone(),
    };
    // Below raw, the platform and the versions are internals.
    ModelMetadata {
        name: metadata.name.clone(),
        versions: Vec::new(),
        platform: String::new(),
        inputs: metadata.inputs.clone(),
        outputs,
    }
}

/// Scores as f64 rows, whatever their float width.
fn score_rows(tensor: &Tensor) -> Result<(usize, usize, Vec<f64>), String> {
    let values: Vec<f64> = match &tensor.data {
        TensorData::Fp32(values) => values.iter().map(|&v| f64::from(v)).collect(),
        TensorData::Fp64(values) => values.clone(),
        other => {
            return Err(format!(
                "scores output '{}' is {}, not a float tensor",
                tensor.name,
                other.datatype().as_str()
            ));
        }
    };
    let [rows, classes] = tensor.shape[..] else {
        return Err(format!("scores output '{}' has shape {:?}, not [batch, classes]", tensor.name, tensor.shape));
    };
    let rows = usize::try_from(rows).map_err(|_| "too many rows".to_owned())?;
    let classes = usize::try_from(classes).map_err(|_| "too many classes".to_owned())?;
    if rows.checked_mul(classes) != Some(values.len()) || classes == 0 {
        return Err(format!("scores output '{}' does not match its shape", tensor.name));
    }
    Ok((rows, classes, values))
}

fn round_to(value: f64, decimals: Option<u32>) -> f64 {
    match decimals {
        None => value,
        Some(decimals) => {
            let scale = 10f64.powi(i32::try_from(decimals).unwrap_or(9));
            (value * scale).round() / scale
        }
    }
}

fn class_name(spec: &OutputSpec, index: usize) -> Vec<u8> {
    spec.classes.get(index).map_or_else(|| index.to_string().into_bytes(), |name| name.clone().into_bytes())
}

/// Index of the highest score in a row (the first one on ties, NaN never wins).
fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (index, &value) in row.iter().enumerate() {
        if value > row[best] || row[best].is_nan() {
            best = index;
        }
    }
    best
}

/// Applies `policy` to a model's outputs. Under `raw` (or without a spec) they pass unchanged.
pub fn apply(policy: OutputPolicy, spec: Option<&OutputSpec>, mut outputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
    let Some(spec) = spec.filter(|_| policy != OutputPolicy::Raw) else {
        return Ok(outputs);
    };
    let position = outputs
        .iter()
        .position(|tensor| tensor.name == spec.scores)
        .ok_or_else(|| format!("the model gave no output '{}'", spec.scores))?;
    let scores = outputs.swap_remove(position);
    let (rows, classes, values) = score_rows(&scores)?;
    let model_label = spec
        .label
        .as_ref()
        .and_then(|name| outputs.iter().position(|tensor| &tensor.name == name))
        .map(|i| outputs.swap_remove(i));

    let top: Vec<usize> = values.chunks(classes).map(argmax).collect();
    let label = match (model_label, spec.classes.is_empty()) {
        // The model's own label, as it gives it.
        (Some(mut label), true) => {
            label.name = LABEL.into();
            label
        }
        // Class names, from the model's label indices if it gives them, else from the scores.
        (model_label, _) => {
            let indices: Vec<usize> = match model_label.map(|label| label.data) {
                Some(TensorData::Int64(values)) => {
                    values.iter().map(|&v| usize::try_from(v).unwrap_or(usize::MAX)).collect()
                }
                _ => top.clone(),
            };
            let data = if spec.classes.is_empty() {
                TensorData::Int64(indices.iter().map(|&i| i64::try_from(i).unwrap_or(-1)).collect())
            } else {
                TensorData::Bytes(indices.iter().map(|&i| class_name(spec, i)).collect())
            };
            Tensor { name: LABEL.into(), shape: vec![rows as u64], data }
        }
    };

    Ok(match policy {
        OutputPolicy::Label => vec![label],
        OutputPolicy::TopK { k, round } => {
            let k = usize::try_from(k).unwrap_or(usize::MAX).min(classes);
            let mut names = Vec::with_capacity(rows * k);
            let mut best = Vec::with_capacity(rows * k);
            for row in values.chunks(classes) {
                let mut order: Vec<usize> = (0..classes).collect();
                order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                for &index in order.iter().take(k) {
                    names.push(class_name(spec, index));
                    #[expect(clippy::cast_possible_truncation, reason = "scores are probabilities")]
                    best.push(round_to(row[index], round) as f32);
                }
            }
            let shape = vec![rows as u64, k as u64];
            vec![
                label,
                Tensor { name: TOP_K_CLASSES.into(), shape: shape.clone(), data: TensorData::Bytes(names) },
                Tensor { name: TOP_K_SCORES.into(), shape, data: TensorData::Fp32(best) },
            ]
        }
        // Raw returned unchanged above; were it to reach here it would get unrounded scores.
        OutputPolicy::Scores { .. } | OutputPolicy::Raw => {
            let round = match policy {
                OutputPolicy::Scores { round } => round,
                _ => None,
            };
            let data = match scores.data {
                #[expect(clippy::cast_possible_truncation, reason = "rounding an f32 through f64")]
                TensorData::Fp32(v) => {
                    TensorData::Fp32(v.iter().map(|&x| round_to(f64::from(x), round) as f32).collect())
                }
                _ => TensorData::Fp64(values.iter().map(|&x| round_to(x, round)).collect()),
            };
            vec![label, Tensor { data, ..scores }]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(classes: &[&str]) -> OutputSpec {
        OutputSpec {
            scores: "probabilities".into(),
            label: Some("label".into()),
            classes: classes.iter().map(|c| (*c).into()).collect(),
        }
    }

    fn outputs() -> Vec<Tensor> {
        vec![
            Tensor { name: "label".into(), shape: vec![2], data: TensorData::Int64(vec![1, 0]) },
            Tensor {
                name: "probabilities".into(),
                shape: vec![2, 3],
                data: TensorData::Fp32(vec![0.1234, 0.5678, 0.3088, 0.7, 0.2, 0.1]),
            },
        ]
    }

    fn find<'a>(tensors: &'a [Tensor], name: &str) -> &'a TensorData {
        &tensors.iter().find(|t| t.name == name).unwrap().data
    }

    #[test]
    fn policies_parse_and_print() {
        for text in ["label", "top_k=3", "top_k=2:round=1", "scores", "scores:round=2", "raw"] {
            assert_eq!(text.parse::<OutputPolicy>().unwrap().to_string(), text);
        }
        for bad in ["", "labels", "top_k=0", "top_k=x", "scores:round=99", "raw:round=1", "scores:digits=2"] {
            assert!(bad.parse::<OutputPolicy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn narrowness_is_ordered() {
        let p = |text: &str| text.parse::<OutputPolicy>().unwrap();
        assert!(p("label").is_narrower_or_equal(p("raw")));
        assert!(p("top_k=1").is_narrower_or_equal(p("top_k=3")));
        assert!(!p("top_k=3").is_narrower_or_equal(p("top_k=1")));
        assert!(p("scores:round=2").is_narrower_or_equal(p("scores")));
        assert!(!p("scores").is_narrower_or_equal(p("scores:round=2")));
        assert!(!p("raw").is_narrower_or_equal(p("scores")));
        assert_eq!(p("raw").narrowest(p("label")), p("label"));
        assert_eq!(p("top_k=2").narrowest(p("scores:round=1")), p("top_k=2:round=1"));
        // Incomparable top_k policies: fewer classes and fewer decimals, whichever side has them.
        assert_eq!(p("top_k=10:round=2").narrowest(p("top_k=3:round=4")), p("top_k=3:round=2"));
        assert_eq!(p("top_k=3:round=4").narrowest(p("top_k=10:round=2")), p("top_k=3:round=2"));
    }

    #[test]
    fn label_policy_gives_class_names_only() {
        let out = apply(OutputPolicy::Label, Some(&spec(&["a", "b", "c"])), outputs()).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(find(&out, "label"), &TensorData::Bytes(vec![b"b".to_vec(), b"a".to_vec()]));
        let out = apply(OutputPolicy::Label, Some(&spec(&[])), outputs()).unwrap();
        assert_eq!(find(&out, "label"), &TensorData::Int64(vec![1, 0]));
    }

    #[test]
    fn top_k_sorts_and_rounds() {
        let out = apply(OutputPolicy::TopK { k: 2, round: Some(1) }, Some(&spec(&["a", "b", "c"])), outputs()).unwrap();
        assert_eq!(
            find(&out, TOP_K_CLASSES),
            &TensorData::Bytes(vec![b"b".to_vec(), b"c".to_vec(), b"a".to_vec(), b"b".to_vec()])
        );
        assert_eq!(find(&out, TOP_K_SCORES), &TensorData::Fp32(vec![0.6, 0.3, 0.7, 0.2]));
        // k beyond the class count is capped.
        let out = apply(OutputPolicy::TopK { k: 9, round: None }, Some(&spec(&[])), outputs()).unwrap();
        assert_eq!(out.iter().find(|t| t.name == TOP_K_SCORES).unwrap().shape, vec![2, 3]);
    }

    #[test]
    fn scores_are_rounded_and_other_outputs_dropped() {
        let mut all = outputs();
        all.push(Tensor { name: "embedding".into(), shape: vec![2, 1], data: TensorData::Fp32(vec![9.0, 9.0]) });
        let out = apply(OutputPolicy::Scores { round: Some(2) }, Some(&spec(&[])), all.clone()).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(find(&out, "probabilities"), &TensorData::Fp32(vec![0.12, 0.57, 0.31, 0.7, 0.2, 0.1]));
        assert_eq!(apply(OutputPolicy::Raw, Some(&spec(&[])), all.clone()).unwrap(), all);
    }

    #[test]
    fn metadata_hides_internals_below_raw() {
        let model = ModelMetadata {
            name: "m".into(),
            versions: vec!["1".into()],
            platform: "onnx_onnxv1".into(),
            inputs: vec![],
            outputs: vec![
                TensorMeta { name: "label".into(), datatype: DataType::Int64, shape: vec![-1] },
                TensorMeta { name: "probabilities".into(), datatype: DataType::Fp32, shape: vec![-1, 3] },
            ],
        };
        let shown = metadata(OutputPolicy::Label, Some(&spec(&["a", "b", "c"])), &model);
        assert!(shown.platform.is_empty() && shown.versions.is_empty());
        assert_eq!(
            shown.outputs,
            vec![TensorMeta { name: "label".into(), datatype: DataType::Bytes, shape: vec![-1] }]
        );
        assert_eq!(metadata(OutputPolicy::Raw, Some(&spec(&[])), &model), model);
        assert!(spec(&["a", "b"]).check(&model).is_err());
        assert!(spec(&["a", "b", "c"]).check(&model).is_ok());
    }
}
