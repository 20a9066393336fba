//! The architectures people use, each as a builder of the one layer graph. Layer sizes come from the
//! weight file; only what a file cannot say (strides, paddings, where pools sit) is written here.

mod blocks;
mod convnext;
mod densenet;
mod efficientnet;
mod efficientnet_lite;
mod googlenet;
mod inception_v3;
mod mnasnet;
mod mobilenet_v2;
mod mobilenet_v3;
mod regnet;
mod resnet;
mod shufflenet_v2;
mod squeezenet;
mod vgg;
pub mod vit;

use crate::error::Result;
use crate::fail;
use crate::graph::Graph;
use crate::weights::WeightMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    ResNet18,
    ResNet34,
    ResNet50,
    Vgg11,
    Vgg13,
    Vgg16,
    Vgg19,
    Vgg11Bn,
    Vgg13Bn,
    Vgg16Bn,
    Vgg19Bn,
    AlexNet,
    SqueezeNet1_0,
    SqueezeNet1_1,
    MobileNetV2,
    EfficientNetLite0,
    /// EfficientNet-Lite1 to Lite4 (deeper and wider Lite0s, read from the file).
    EfficientNetLite,
    /// Any other torchvision ResNet: ResNet-101/152, ResNeXt, Wide ResNet (depths, groups and
    /// widths read from the file).
    ResNet,
    DenseNet,
    GoogLeNet,
    InceptionV3,
    MnasNet,
    ShuffleNetV2,
    MobileNetV3,
    /// EfficientNet B0-B7.
    EfficientNet,
    EfficientNetV2,
    /// RegNet X and Y.
    RegNet,
    ConvNeXt,
    /// Vision Transformers (vit_b_16, vit_b_32, vit_l_16, vit_l_32, vit_h_14).
    Vit,
    /// A graph imported from an ONNX file (whatever network it holds).
    Onnx,
}

/// How pixels become network input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum InputNorm {
    /// torchvision: (x / 255 - mean) / std.
    ImageNetMeanStd,
    /// TF-born EfficientNet-Lite: (x - 127) / 128.
    Centered127,
    /// (x / 255 - 0.5) / 0.5: what torchvision's pretrained GoogLeNet and Inception v3 see after
    /// their `transform_input` step (which a state dict cannot record, so the builders leave it out).
    Half,
}

/// The architectures built from a state dict's keys (not `Onnx`).
pub const ALL: [Arch; 29] = [
    Arch::ResNet18,
    Arch::ResNet34,
    Arch::ResNet50,
    Arch::Vgg11,
    Arch::Vgg13,
    Arch::Vgg16,
    Arch::Vgg19,
    Arch::Vgg11Bn,
    Arch::Vgg13Bn,
    Arch::Vgg16Bn,
    Arch::Vgg19Bn,
    Arch::AlexNet,
    Arch::SqueezeNet1_0,
    Arch::SqueezeNet1_1,
    Arch::MobileNetV2,
    Arch::EfficientNetLite0,
    Arch::EfficientNetLite,
    Arch::ResNet,
    Arch::DenseNet,
    Arch::GoogLeNet,
    Arch::InceptionV3,
    Arch::MnasNet,
    Arch::ShuffleNetV2,
    Arch::MobileNetV3,
    Arch::EfficientNet,
    Arch::EfficientNetV2,
    Arch::RegNet,
    Arch::ConvNeXt,
    Arch::Vit,
];

/// Whether a weight file holds a family (each family module's `matches`).
type FamilyTest = fn(&WeightMap) -> bool;

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::ResNet18 => "resnet18",
            Arch::ResNet34 => "resnet34",
            Arch::ResNet50 => "resnet50",
            Arch::Vgg11 => "vgg11",
            Arch::Vgg13 => "vgg13",
            Arch::Vgg16 => "vgg16",
            Arch::Vgg19 => "vgg19",
            Arch::Vgg11Bn => "vgg11_bn",
            Arch::Vgg13Bn => "vgg13_bn",
            Arch::Vgg16Bn => "vgg16_bn",
            Arch::Vgg19Bn => "vgg19_bn",
            Arch::AlexNet => "alexnet",
            Arch::SqueezeNet1_0 => "squeezenet1_0",
            Arch::SqueezeNet1_1 => "squeezenet1_1",
            Arch::MobileNetV2 => "mobilenet_v2",
            Arch::EfficientNetLite0 => "efficientnet_lite0",
            Arch::EfficientNetLite => "efficientnet_lite",
            Arch::ResNet => "resnet",
            Arch::DenseNet => "densenet",
            Arch::GoogLeNet => "googlenet",
            Arch::InceptionV3 => "inception_v3",
            Arch::MnasNet => "mnasnet",
            Arch::ShuffleNetV2 => "shufflenet_v2",
            Arch::MobileNetV3 => "mobilenet_v3",
            Arch::EfficientNet => "efficientnet",
            Arch::EfficientNetV2 => "efficientnet_v2",
            Arch::RegNet => "regnet",
            Arch::ConvNeXt => "convnext",
            Arch::Vit => "vit",
            Arch::Onnx => "onnx",
        }
    }

    pub fn from_name(name: &str) -> Result<Arch> {
        let norm = name.trim().to_ascii_lowercase().replace('-', "_");
        ALL.iter().copied().find(|a| a.name() == norm).map_or_else(
            || {
                let names: Vec<&str> = ALL.iter().map(|a| a.name()).collect();
                fail!(Option, "unknown architecture '{name}'; supported: {}", names.join(", "))
            },
            Ok,
        )
    }

    /// The natural Grad-CAM target. For the families added with the general graph (and ONNX files)
    /// it is the last spatial activation: the map that feeds the global pooling
    /// (`Graph::pooled_layer`); the older builders keep the layers they have always named.
    /// The output of the last convolutional stage.
    /// ResNet: `layer4` (7x7 at 224); VGG: the last ReLU before the final max pool (14x14, as in the
    /// Grad-CAM paper); AlexNet: `features.11` (13x13); SqueezeNet: the last Fire module `features.12`;
    /// MobileNetV2: `features.18` (1280x7x7); EfficientNet-Lite0: `_conv_head.act` (1280x7x7 after ReLU6).
    pub fn default_layer(self, graph: &Graph) -> String {
        match self {
            Arch::ResNet18 | Arch::ResNet34 | Arch::ResNet50 => "layer4".into(),
            Arch::EfficientNetLite0 | Arch::EfficientNetLite => "_conv_head.act".into(),
            Arch::MobileNetV2 => "features.18".into(),
            Arch::SqueezeNet1_0 | Arch::SqueezeNet1_1 => "features.12".into(),
            Arch::Vit => vit::default_layer(graph),
            Arch::ResNet
            | Arch::DenseNet
            | Arch::GoogLeNet
            | Arch::InceptionV3
            | Arch::MnasNet
            | Arch::ShuffleNetV2
            | Arch::MobileNetV3
            | Arch::EfficientNet
            | Arch::EfficientNetV2
            | Arch::RegNet
            | Arch::ConvNeXt
            | Arch::Onnx => graph.pooled_layer().map(|id| graph.display_name(id).to_string()).unwrap_or_else(|| graph.nodes[graph.output()].name.clone()),
            // The last ReLU of `features` (the node before the last max pool).
            _ => graph.nodes.iter().rev().find(|n| matches!(n.op, crate::graph::Op::Relu) && n.name.starts_with("features.")).map(|n| n.name.clone()).unwrap_or_else(|| "features".into()),
        }
    }

    /// The (square) input size of the family's evaluation transform, and the size the image's
    /// shorter side is resized to before the centre crop.
    ///
    /// `eval_size` refines it from the file where the family has several (EfficientNet B0-B7, V2).
    pub fn input_size(self) -> (usize, usize) {
        match self {
            Arch::InceptionV3 => (299, 342),
            _ => (224, 256),
        }
    }

    /// The evaluation (crop, resize) of the variant a file holds.
    pub fn eval_size(self, weights: &WeightMap) -> (usize, usize) {
        match self {
            Arch::EfficientNet => efficientnet::eval_size(weights, false),
            Arch::EfficientNetV2 => efficientnet::eval_size(weights, true),
            Arch::EfficientNetLite => efficientnet_lite::eval_size(weights),
            _ => self.input_size(),
        }
    }

    pub fn input_norm(self) -> InputNorm {
        match self {
            Arch::EfficientNetLite0 | Arch::EfficientNetLite => InputNorm::Centered127,
            Arch::GoogLeNet | Arch::InceptionV3 => InputNorm::Half,
            _ => InputNorm::ImageNetMeanStd,
        }
    }

    /// Builds the graph of this architecture from a weight file; every key must be used.
    pub fn build(self, weights: &WeightMap) -> Result<Graph> {
        match self {
            Arch::ResNet18 => resnet::build(weights, [2, 2, 2, 2], false),
            Arch::ResNet34 => resnet::build(weights, [3, 4, 6, 3], false),
            Arch::ResNet50 => resnet::build(weights, [3, 4, 6, 3], true),
            Arch::AlexNet => vgg::build(weights, vgg::Family::AlexNet, 5),
            Arch::Vgg11 | Arch::Vgg11Bn => vgg::build(weights, vgg::Family::Vgg { batch_norm: self == Arch::Vgg11Bn }, 8),
            Arch::Vgg13 | Arch::Vgg13Bn => vgg::build(weights, vgg::Family::Vgg { batch_norm: self == Arch::Vgg13Bn }, 10),
            Arch::Vgg16 | Arch::Vgg16Bn => vgg::build(weights, vgg::Family::Vgg { batch_norm: self == Arch::Vgg16Bn }, 13),
            Arch::Vgg19 | Arch::Vgg19Bn => vgg::build(weights, vgg::Family::Vgg { batch_norm: self == Arch::Vgg19Bn }, 16),
            Arch::SqueezeNet1_0 | Arch::SqueezeNet1_1 => {
                // 1.0 and 1.1 differ in the stem (96 7x7 vs 64 3x3 filters): the name must match the file.
                let want: &[usize] = if self == Arch::SqueezeNet1_0 { &[96, 3, 7, 7] } else { &[64, 3, 3, 3] };
                weights.check("features.0.weight", &want.iter().map(|&d| Some(d)).collect::<Vec<_>>())?;
                squeezenet::build(weights)
            }
            Arch::MobileNetV2 => mobilenet_v2::build(weights),
            Arch::EfficientNetLite0 | Arch::EfficientNetLite => efficientnet_lite::build(weights),
            Arch::ResNet => resnet::build_any(weights),
            Arch::DenseNet => densenet::build(weights),
            Arch::GoogLeNet => googlenet::build(weights),
            Arch::InceptionV3 => inception_v3::build(weights),
            Arch::MnasNet => mnasnet::build(weights),
            Arch::ShuffleNetV2 => shufflenet_v2::build(weights),
            Arch::MobileNetV3 => mobilenet_v3::build(weights),
            Arch::EfficientNet => efficientnet::build(weights, false),
            Arch::EfficientNetV2 => efficientnet::build(weights, true),
            Arch::RegNet => regnet::build(weights),
            Arch::ConvNeXt => convnext::build(weights),
            Arch::Vit => vit::build(weights, None),
            Arch::Onnx => fail!(Option, "an ONNX graph is imported from its file, not built from a state dict"),
        }
    }

    /// Names the architecture of a weight file from its keys and shapes.
    pub fn detect(weights: &WeightMap) -> Result<Arch> {
        let has = |k: &str| weights.contains(k);
        let shape0 = |k: &str| weights.shape(k).and_then(|s| s.first().copied());
        if has("_conv_stem.weight") && has("_conv_head.weight") {
            return Ok(if efficientnet_lite::block_count(weights) == 16 { Arch::EfficientNetLite0 } else { Arch::EfficientNetLite });
        }
        // The families whose keys are their own: each module says whether a file is one of its.
        let families: [(Arch, FamilyTest); 12] = [
            (Arch::DenseNet, densenet::matches),
            (Arch::GoogLeNet, googlenet::matches),
            (Arch::InceptionV3, inception_v3::matches),
            (Arch::MnasNet, mnasnet::matches),
            (Arch::ShuffleNetV2, shufflenet_v2::matches),
            (Arch::MobileNetV3, mobilenet_v3::matches),
            (Arch::EfficientNetV2, |w| efficientnet::matches(w, true)),
            (Arch::EfficientNet, |w| efficientnet::matches(w, false)),
            (Arch::RegNet, regnet::matches),
            (Arch::ConvNeXt, convnext::matches),
            (Arch::Vit, vit::matches),
            (Arch::ResNet, resnet::matches_other),
        ];
        if let Some((arch, _)) = families.iter().find(|(_, m)| m(weights)) {
            return Ok(*arch);
        }
        if let Some((counts, bottleneck)) = resnet::layout(weights) {
            // Anything but the exact resnet18/34/50 layouts was claimed by `resnet::matches_other` above.
            return Ok(match (counts, bottleneck) {
                ([2, 2, 2, 2], false) => Arch::ResNet18,
                ([3, 4, 6, 3], false) => Arch::ResNet34,
                ([3, 4, 6, 3], true) => Arch::ResNet50,
                _ => Arch::ResNet,
            });
        }
        if has("features.18.0.weight") && has("features.1.conv.0.0.weight") {
            return Ok(Arch::MobileNetV2);
        }
        if has("features.3.squeeze.weight") {
            return match shape0("features.0.weight") {
                Some(96) => Ok(Arch::SqueezeNet1_0),
                Some(64) => Ok(Arch::SqueezeNet1_1),
                _ => fail!(Weights, "a SqueezeNet whose first conv is neither 1.0's (96 filters) nor 1.1's (64)"),
            };
        }
        if has("features.0.weight") {
            let k = weights.shape("features.0.weight").map(|s| s.to_vec()).unwrap_or_default();
            if k.len() == 4 && k[2] == 11 {
                return Ok(Arch::AlexNet);
            }
            let convs = weights.names().filter(|n| n.starts_with("features.") && n.ends_with(".weight") && weights.shape(n).is_some_and(|s| s.len() == 4)).count();
            let bn = weights.names().any(|n| n.starts_with("features.") && n.ends_with(".running_var"));
            return match (convs, bn) {
                (8, false) => Ok(Arch::Vgg11),
                (10, false) => Ok(Arch::Vgg13),
                (13, false) => Ok(Arch::Vgg16),
                (16, false) => Ok(Arch::Vgg19),
                (8, true) => Ok(Arch::Vgg11Bn),
                (10, true) => Ok(Arch::Vgg13Bn),
                (13, true) => Ok(Arch::Vgg16Bn),
                (16, true) => Ok(Arch::Vgg19Bn),
                _ => fail!(Weights, "a features/classifier network with {convs} convs is not a VGG 11/13/16/19 or AlexNet; pass the architecture explicitly"),
            };
        }
        let some: Vec<&str> = weights.names().take(4).collect();
        fail!(Weights, "cannot tell the architecture from the keys (first keys: {}); pass it explicitly (e.g. --arch resnet18)", some.join(", "))
    }
}
