//! Module paths: where in the PyTorch module tree each ONNX node was produced, so imported layers
//! carry the names a state-dict-loaded model uses (`layer4.1.conv1`, `features.3`).
//!
//! - Dynamo exporter: node metadata `namespace`, one `path: class` segment per module from the
//!   root, then `fx_node: aten_op`, e.g. `: torchvision.models.resnet.ResNet/layer4:
//!   torch.nn.modules.container.Sequential/layer4.1: torchvision.models.resnet.BasicBlock/
//!   layer4.1.relu: torch.nn.modules.activation.ReLU/relu_16: aten.relu.default`; the paths are full
//!   (`layer4.1.relu`). A module called twice gives the same path twice.
//! - TorchScript exporter: node names `/layer4/layer4.1/relu_1/Relu`: one scope per module, each
//!   the module's full path cut after its last non-numeric part (`features.1.block.0.0` is scope
//!   `block.0.0` under `block.0`), a second call of a module suffixed `_1`; then the op type.
//!   The full path is rebuilt scope by scope: a scope that extends its parent's scope by numeric
//!   parts extends the parent's path by them, any other scope is an attribute of the parent.

/// The module path of a node: `Some("")` for the model's own forward, `None` when the file does
/// not say (other exporters, or nodes the exporter made up).
pub fn module_path(node_name: &str, metadata: &[(String, String)]) -> Option<String> {
    if let Some((_, ns)) = metadata.iter().find(|(k, _)| k == "namespace") {
        return Some(from_namespace(ns));
    }
    from_torchscript_name(node_name)
}

/// The class of the innermost module a node was produced in, from the dynamo exporter's
/// `namespace` (`torch.nn.modules.pooling.AdaptiveAvgPool2d`); `None` for other exporters and
/// for ops in the model's own forward.
pub fn module_class(metadata: &[(String, String)]) -> Option<&str> {
    let (_, ns) = metadata.iter().find(|(k, _)| k == "namespace")?;
    let segments: Vec<&str> = ns.split('/').collect();
    let modules = &segments[..segments.len().saturating_sub(1)];
    // The root segment names no path (`: torchvision.models.vgg.VGG`): not a submodule.
    if modules.len() < 2 {
        return None;
    }
    modules.last()?.split_once(':').map(|(_, class)| class.trim())
}

fn from_namespace(ns: &str) -> String {
    let segments: Vec<&str> = ns.split('/').collect();
    // All but the last segment are modules; the last is the fx node and its aten op.
    let modules = &segments[..segments.len().saturating_sub(1)];
    modules.last().map(|s| s.split(':').next().unwrap_or("").trim().to_string()).unwrap_or_default()
}

fn is_numeric_tail(s: &str) -> bool {
    // `0`, `0.1`, also a repeated call `0_1`.
    let s = match s.rsplit_once('_') {
        Some((head, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => s,
    };
    !s.is_empty() && s.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn from_torchscript_name(name: &str) -> Option<String> {
    let rest = name.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    let scopes = &parts[..parts.len() - 1];
    let (mut path, mut scope) = (String::new(), "");
    for &s in scopes {
        if s.is_empty() {
            return None;
        }
        let tail = s.strip_prefix(scope).and_then(|t| t.strip_prefix('.')).filter(|t| !scope.is_empty() && is_numeric_tail(t));
        let step = tail.unwrap_or(s);
        path = if path.is_empty() { step.to_string() } else { format!("{path}.{step}") };
        scope = s;
    }
    Some(path)
}

/// The parent paths of a module path, innermost first: `a.b.c` -> `a.b`, `a`.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('.').map(|(i, _)| &path[..i]).collect::<Vec<_>>().into_iter().rev()
}

/// The longest common module-path prefix (whole parts) of several paths.
pub fn common_prefix<'a>(paths: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut it = paths.into_iter();
    let first: Vec<&str> = it.next()?.split('.').collect();
    let mut n = first.len();
    for p in it {
        let parts: Vec<&str> = p.split('.').collect();
        n = n.min(first.iter().zip(&parts).take_while(|(a, b)| a == b).count());
    }
    Some(first[..n].join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchscript_scopes_become_module_paths() {
        let p = |n: &str| from_torchscript_name(n).unwrap();
        assert_eq!(p("/layer4/layer4.1/relu_1/Relu"), "layer4.1.relu_1");
        assert_eq!(p("/layer4/layer4.1/conv1/Conv"), "layer4.1.conv1");
        assert_eq!(p("/layer4/layer4.1/Add"), "layer4.1");
        assert_eq!(p("/features/features.1/block/block.0/block.0.0/Conv"), "features.1.block.0.0");
        assert_eq!(p("/features/features.1/block/block.1/fc1/Conv"), "features.1.block.1.fc1");
        assert_eq!(p("/features/features.1/features.1.0/block/block.4/Mul_1"), "features.1.0.block.4");
        assert_eq!(p("/Flatten"), "");
        assert_eq!(p("/avgpool/GlobalAveragePool"), "avgpool");
        assert_eq!(from_torchscript_name("Identity_3"), None);
    }

    #[test]
    fn namespaces_become_module_paths() {
        let ns = ": torchvision.models.resnet.ResNet/layer4: torch.nn.modules.container.Sequential/layer4.1: torchvision.models.resnet.BasicBlock/layer4.1.relu: torch.nn.modules.activation.ReLU/relu_16: aten.relu.default";
        assert_eq!(from_namespace(ns), "layer4.1.relu");
        assert_eq!(from_namespace(": torchvision.models.resnet.ResNet/view: aten.view.default"), "");
        let meta = |ns: &str| vec![("namespace".to_string(), ns.to_string())];
        assert_eq!(module_class(&meta(ns)), Some("torch.nn.modules.activation.ReLU"));
        assert_eq!(module_class(&meta(": torchvision.models.resnet.ResNet/view: aten.view.default")), None);
        assert_eq!(ancestors("a.b.c").collect::<Vec<_>>(), ["a.b", "a"]);
        assert_eq!(common_prefix(["stage3.1.branch2.0", "stage3.1"]).unwrap(), "stage3.1");
    }
}
