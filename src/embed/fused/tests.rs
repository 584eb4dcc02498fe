use super::kernels::erf;
use super::*;

/// A small encoder with pseudo-random weights (no model file needed).
fn random_bert(layers: usize) -> FusedBert {
    let (h, inter, vocab, pos) = (16, 32, 50, 40);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut rand = |n: usize, scale: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
            })
            .collect()
    };
    let ln = |rand: &mut dyn FnMut(usize, f32) -> Vec<f32>| LayerNorm {
        gamma: rand(h, 0.2).iter().map(|g| 1.0 + g).collect(),
        beta: rand(h, 0.2),
    };
    let layers = (0..layers)
        .map(|_| Layer {
            wqkv: rand(h * 3 * h, 0.5),
            bqkv: rand(3 * h, 0.1),
            wo: rand(h * h, 0.5),
            bo: rand(h, 0.1),
            ln1: ln(&mut rand),
            w1: rand(h * inter, 0.5),
            b1: rand(inter, 0.1),
            w2: rand(inter * h, 0.5),
            b2: rand(h, 0.1),
            ln2: ln(&mut rand),
        })
        .collect();
    FusedBert {
        cfg: BertConfig {
            hidden_size: h,
            intermediate_size: inter,
            num_attention_heads: 4,
            num_hidden_layers: 3,
            max_position_embeddings: pos,
            vocab_size: vocab,
            layer_norm_eps: 1e-12,
            hidden_act: None,
        },
        eps: 1e-12,
        word: rand(vocab * h, 1.0),
        position: rand(pos * h, 1.0),
        token_types: rand(2 * h, 1.0),
        emb_ln: ln(&mut rand),
        layers,
        threads: 1,
        skinny: false,
    }
}

#[test]
fn the_first_token_shortcut_equals_the_full_last_layer() {
    let seqs: [&[u32]; 4] = [&[1, 7, 9, 2, 30, 31, 2], &[1, 4, 2, 5, 2], &[], &[1, 2]];
    let types: [&[u32]; 4] = [&[0, 0, 0, 0, 1, 1, 1], &[0, 0, 0, 1, 1], &[], &[0, 0]];
    // With the general GEMM and (where the CPU has it) the unpacked few-row kernel.
    for (layers, skinny) in [(1, false), (3, false), (3, true)] {
        let mut bert = random_bert(layers);
        bert.skinny = skinny && crate::embed::skinny::available();
        let (full, offsets) = bert.forward(&seqs, Some(&types), &mut || {}, false);
        let cls = bert.cls_states(&seqs, &types);
        for (s, seq) in seqs.iter().enumerate() {
            if seq.is_empty() {
                assert!(cls[s].iter().all(|v| *v == 0.0));
                continue;
            }
            let want = &full[offsets[s] * 16..(offsets[s] + 1) * 16];
            for (a, b) in cls[s].iter().zip(want) {
                assert!(
                    (a - b).abs() < 1e-5,
                    "{layers} layers, sequence {s}: {a} vs {b}"
                );
            }
        }
        // Each sequence is read on its own: its state does not depend on its neighbours.
        let alone = bert.cls_states(&seqs[1..2], &types[1..2]);
        for (a, b) in alone[0].iter().zip(&cls[1]) {
            assert!((a - b).abs() < 1e-5);
        }
    }
    let three = random_bert(3);
    assert_eq!(three.keep_layers(1).unwrap().layers(), 1);
    assert!(random_bert(3).keep_layers(4).is_err());
    assert!(random_bert(3).keep_layers(0).is_err());
}

#[test]
fn fast_erf_matches_reference_values() {
    // erf at these points, to 10 digits.
    let table = [
        (0.0, 0.0),
        (0.1, 0.1124629160),
        (0.5, 0.5204998778),
        (1.0, 0.8427007929),
        (1.5, 0.9661051465),
        (2.0, 0.9953222650),
        (3.0, 0.9999779095),
        (5.0, 1.0),
    ];
    for (x, want) in table {
        assert!(
            (erf(x) - want).abs() < 2e-7,
            "erf({x}) = {} vs {want}",
            erf(x)
        );
        assert!((erf(-x) + want).abs() < 2e-7, "erf is odd at {x}");
    }
}
