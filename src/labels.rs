//! The 1000 ImageNet class names (torchvision's short names), shipped with the crate.

const IMAGENET_JSON: &str = include_str!("../assets/imagenet_classes.json");

pub fn imagenet() -> Vec<String> {
    serde_json::from_str(IMAGENET_JSON).unwrap_or_else(|_| (0..1000).map(|i| format!("class {i}")).collect())
}
