//! Synthetic weights with torchvision's key names and shapes for every architecture: He-scaled
//! random convs and linears, near-identity batch-norms. For benchmarks and tests of loading and
//! explaining without downloading every pretrained model (only the default model is real).

use crate::weights::legacy_pth::RawTensor;
use crate::weights::safetensors_writer::{write_safetensors, StoreAs};
use crate::Arch;

/// Deterministic xorshift numbers in [-1, 1).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1)
    }
    pub fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }
}

/// Builds a state dict with torchvision's key names and He-scaled random weights.
pub struct StateDict {
    pub tensors: Vec<RawTensor>,
    rng: Rng,
}

impl StateDict {
    pub fn new(seed: u64) -> Self {
        StateDict { tensors: vec![], rng: Rng::new(seed) }
    }
    fn push(&mut self, name: &str, shape: &[usize], data: Vec<f32>) {
        self.tensors.push(RawTensor { name: name.into(), shape: shape.to_vec(), data });
    }
    pub fn conv(&mut self, name: &str, cout: usize, cin_per_group: usize, k: usize, bias: bool) {
        let fan_in = cin_per_group * k * k;
        let data = self.rng.vec(cout * fan_in, (6.0 / fan_in as f32).sqrt());
        self.push(&format!("{name}.weight"), &[cout, cin_per_group, k, k], data);
        if bias {
            let b = self.rng.vec(cout, 0.1);
            self.push(&format!("{name}.bias"), &[cout], b);
        }
    }
    pub fn bn(&mut self, name: &str, c: usize) {
        let gamma = self.rng.vec(c, 0.2).into_iter().map(|v| 1.0 + v).collect();
        let beta = self.rng.vec(c, 0.1);
        let mean = self.rng.vec(c, 0.1);
        let var = self.rng.vec(c, 0.2).into_iter().map(|v| 1.0 + v).collect();
        self.push(&format!("{name}.weight"), &[c], gamma);
        self.push(&format!("{name}.bias"), &[c], beta);
        self.push(&format!("{name}.running_mean"), &[c], mean);
        self.push(&format!("{name}.running_var"), &[c], var);
    }
    pub fn linear(&mut self, name: &str, out: usize, inp: usize) {
        let data = self.rng.vec(out * inp, (6.0 / inp as f32).sqrt());
        self.push(&format!("{name}.weight"), &[out, inp], data);
        let b = self.rng.vec(out, 0.1);
        self.push(&format!("{name}.bias"), &[out], b);
    }
    pub fn bytes(&self) -> Vec<u8> {
        write_safetensors(&self.tensors, StoreAs::F32, &[]).unwrap_or_default()
    }
    pub fn without(mut self, key: &str) -> Self {
        self.tensors.retain(|t| t.name != key);
        self
    }
}

pub fn resnet(depth: usize, classes: usize) -> StateDict {
    let (blocks, bottleneck) = match depth {
        18 => ([2, 2, 2, 2], false),
        34 => ([3, 4, 6, 3], false),
        50 => ([3, 4, 6, 3], true),
        _ => panic!("resnet{depth}"),
    };
    let mut s = StateDict::new(depth as u64);
    s.conv("conv1", 64, 3, 7, false);
    s.bn("bn1", 64);
    let mut cin = 64;
    for (l, &n) in blocks.iter().enumerate() {
        let planes = 64 << l;
        let cout = if bottleneck { planes * 4 } else { planes };
        for b in 0..n {
            let p = format!("layer{}.{b}", l + 1);
            if bottleneck {
                s.conv(&format!("{p}.conv1"), planes, cin, 1, false);
                s.bn(&format!("{p}.bn1"), planes);
                s.conv(&format!("{p}.conv2"), planes, planes, 3, false);
                s.bn(&format!("{p}.bn2"), planes);
                s.conv(&format!("{p}.conv3"), cout, planes, 1, false);
                s.bn(&format!("{p}.bn3"), cout);
            } else {
                s.conv(&format!("{p}.conv1"), planes, cin, 3, false);
                s.bn(&format!("{p}.bn1"), planes);
                s.conv(&format!("{p}.conv2"), planes, planes, 3, false);
                s.bn(&format!("{p}.bn2"), planes);
            }
            if b == 0 && (l > 0 || cin != cout) {
                s.conv(&format!("{p}.downsample.0"), cout, cin, 1, false);
                s.bn(&format!("{p}.downsample.1"), cout);
            }
            cin = cout;
        }
    }
    s.linear("fc", classes, cin);
    s
}

/// VGG from its torchvision config (0 = max pool), with a classifier of the given hidden width.
pub fn vgg(cfg: &[usize], batch_norm: bool, hidden: usize, classes: usize) -> StateDict {
    let mut s = StateDict::new(cfg.len() as u64 + batch_norm as u64);
    let (mut i, mut cin) = (0, 3);
    for &c in cfg {
        if c == 0 {
            i += 1;
            continue;
        }
        s.conv(&format!("features.{i}"), c, cin, 3, true);
        if batch_norm {
            s.bn(&format!("features.{}", i + 1), c);
        }
        i += if batch_norm { 3 } else { 2 };
        cin = c;
    }
    s.linear("classifier.0", hidden, cin * 49);
    s.linear("classifier.3", hidden, hidden);
    s.linear("classifier.6", classes, hidden);
    s
}

pub const VGG11: [usize; 13] = [64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0];
pub const VGG13: [usize; 15] = [64, 64, 0, 128, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0];
pub const VGG16: [usize; 18] = [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0];

pub fn alexnet(hidden: usize, classes: usize) -> StateDict {
    let mut s = StateDict::new(11);
    s.conv("features.0", 64, 3, 11, true);
    s.conv("features.3", 192, 64, 5, true);
    s.conv("features.6", 384, 192, 3, true);
    s.conv("features.8", 256, 384, 3, true);
    s.conv("features.10", 256, 256, 3, true);
    s.linear("classifier.1", hidden, 256 * 36);
    s.linear("classifier.4", hidden, hidden);
    s.linear("classifier.6", classes, hidden);
    s
}

pub fn squeezenet(v1_0: bool, classes: usize) -> StateDict {
    let mut s = StateDict::new(if v1_0 { 10 } else { 11 });
    // (index, squeeze, expand) per Fire module; inputs follow from the previous output.
    let fires: [(usize, usize, usize); 8] = if v1_0 {
        [(3, 16, 64), (4, 16, 64), (5, 32, 128), (7, 32, 128), (8, 48, 192), (9, 48, 192), (10, 64, 256), (12, 64, 256)]
    } else {
        [(3, 16, 64), (4, 16, 64), (6, 32, 128), (7, 32, 128), (9, 48, 192), (10, 48, 192), (11, 64, 256), (12, 64, 256)]
    };
    let mut cin = if v1_0 { 96 } else { 64 };
    s.conv("features.0", cin, 3, if v1_0 { 7 } else { 3 }, true);
    for (i, sq, e) in fires {
        s.conv(&format!("features.{i}.squeeze"), sq, cin, 1, true);
        s.conv(&format!("features.{i}.expand1x1"), e, sq, 1, true);
        s.conv(&format!("features.{i}.expand3x3"), e, sq, 3, true);
        cin = 2 * e;
    }
    s.conv("classifier.1", classes, 512, 1, true);
    s
}

pub fn mobilenet_v2(classes: usize) -> StateDict {
    let mut s = StateDict::new(2);
    s.conv("features.0.0", 32, 3, 3, false);
    s.bn("features.0.1", 32);
    let settings = [(1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1)];
    let (mut cin, mut f) = (32, 1);
    for (t, c, n) in settings {
        for _ in 0..n {
            let p = format!("features.{f}.conv");
            let hidden = cin * t;
            if t == 1 {
                s.conv(&format!("{p}.0.0"), hidden, 1, 3, false);
                s.bn(&format!("{p}.0.1"), hidden);
                s.conv(&format!("{p}.1"), c, hidden, 1, false);
                s.bn(&format!("{p}.2"), c);
            } else {
                s.conv(&format!("{p}.0.0"), hidden, cin, 1, false);
                s.bn(&format!("{p}.0.1"), hidden);
                s.conv(&format!("{p}.1.0"), hidden, 1, 3, false);
                s.bn(&format!("{p}.1.1"), hidden);
                s.conv(&format!("{p}.2"), c, hidden, 1, false);
                s.bn(&format!("{p}.3"), c);
            }
            cin = c;
            f += 1;
        }
    }
    s.conv("features.18.0", 1280, 320, 1, false);
    s.bn("features.18.1", 1280);
    s.linear("classifier.1", classes, 1280);
    s
}

/// A full-size synthetic state dict for `arch` with `classes` outputs (classifier width 4096 for
/// VGG/AlexNet as in torchvision), or None for the default model's architecture (use the real file)
/// and the families tested on torchvision's own files.
pub fn state_dict(arch: Arch, classes: usize) -> Option<StateDict> {
    Some(match arch {
        Arch::ResNet18 => resnet(18, classes),
        Arch::ResNet34 => resnet(34, classes),
        Arch::ResNet50 => resnet(50, classes),
        Arch::Vgg11 => vgg(&VGG11, false, 4096, classes),
        Arch::Vgg13 => vgg(&VGG13, false, 4096, classes),
        Arch::Vgg16 => vgg(&VGG16, false, 4096, classes),
        Arch::Vgg11Bn => vgg(&VGG11, true, 4096, classes),
        Arch::Vgg13Bn => vgg(&VGG13, true, 4096, classes),
        Arch::Vgg16Bn => vgg(&VGG16, true, 4096, classes),
        Arch::AlexNet => alexnet(4096, classes),
        Arch::SqueezeNet1_0 => squeezenet(true, classes),
        Arch::SqueezeNet1_1 => squeezenet(false, classes),
        Arch::MobileNetV2 => mobilenet_v2(classes),
        // The families added with the general graph are tested on state dicts that torchvision
        // writes (tests/fixtures/families), not on synthetic ones.
        _ => return None,
    })
}
