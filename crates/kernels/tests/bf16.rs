//! bf16 rounding, pair packing and the pair-product GEMM, against their scalar twins and f64 sums.

use pmixer_kernels::bf16::{self, pair, round, unpair};
use pmixer_kernels::check::{self, Gen};
use pmixer_kernels::{MatMut, MatRef};

#[test]
fn rounding_gives_the_values_worked_out_by_hand() {
    let table = [
        (0x3F80_0000u32, 0x3F80u16), // 1.0, exact
        (0x3F80_8000, 0x3F80),       // a tie below an even kept value: stays
        (0x3F81_8000, 0x3F82),       // a tie above an odd one: up to the even
        (0x3F80_8001, 0x3F81),       // just past the tie: up
        (0x3F80_7FFF, 0x3F80),       // just short of it: down
        (0xBF81_8000, 0xBF82),       // the same for negative values
        (0x7F7F_FFFF, 0x7F80),       // the largest f32 rounds past bf16's largest: infinity
        (0x7F7F_7FFF, 0x7F7F),       // below the midpoint: bf16's largest
        (0xFF80_0000, 0xFF80),       // −∞
        (0x7F80_0001, 0x7FC0),       // a signalling NaN comes out quiet
        (0xFFC1_2345, 0xFFC1),       // a quiet NaN keeps its sign and top payload
        (0x0000_0001, 0x0000),       // subnormals become zeros of their sign
        (0x807F_FFFF, 0x8000),
        (0x0080_0000, 0x0080), // the smallest normal is kept
        (0x8000_0000, 0x8000),
    ];
    for (x, want) in table {
        let got = round(f32::from_bits(x));
        assert_eq!(got, want, "round({x:#010x}) = {got:#06x}, want {want:#06x}");
    }
}

#[test]
fn pairs_hold_the_low_value_in_the_low_half() {
    assert_eq!(pair(1.0, -2.0), 0xC000_3F80);
    assert_eq!(unpair(pair(1.5, 0.25)), (1.5, 0.25));
}

#[test]
fn rounding_is_nearest_even_and_vector_packing_gives_the_twins_bits() {
    if !bf16::available() {
        eprintln!("this CPU has no AVX512_BF16: the scalar twin alone is checked");
    }
    let r = check::bf16_rounding();
    assert!(r.passed(), "{r}");
}

#[test]
fn the_gelu_epilogues_give_their_definitions_bits() {
    match check::bf16_gelu_epilogues() {
        Some(r) => assert!(r.passed(), "{r}"),
        None => eprintln!("this CPU has no AVX512_BF16: nothing to check"),
    }
}

#[test]
fn strided_packing_puts_each_pair_in_its_place() {
    // A 5 × 3 view with row stride 4 (the fourth float of each row is not part of it).
    let src: Vec<f32> = (0..20).map(|v| v as f32).collect();
    let mut dst = vec![7u32; 3 * 3];
    bf16::pack_pairs(MatRef::new(&src, 5, 3, (4, 1)), MatMut::new(&mut dst, 3, 3, (3, 1)));
    for q in 0..3 {
        for j in 0..3 {
            let hi = if 2 * q + 1 < 5 { ((2 * q + 1) * 4 + j) as f32 } else { 0.0 };
            assert_eq!(unpair(dst[q * 3 + j]), (((2 * q) * 4 + j) as f32, hi), "pair ({q}, {j})");
        }
    }
}

#[test]
fn pair_products_match_f64_sums_within_their_bound() {
    let reports = check::bf16_products();
    if reports.is_empty() {
        eprintln!("skipped: this CPU has no AVX512_BF16");
        return;
    }
    for r in reports {
        assert!(r.passed(), "{r}");
    }
}

#[test]
fn pair_products_give_the_same_bits_whatever_the_tile() {
    use pmixer_kernels::bf16::{gemm_pairs, PairInit};
    let Some(s) = pmixer_kernels::isa::Avx512Bf16::detect() else {
        eprintln!("skipped: this CPU has no AVX512_BF16");
        return;
    };
    // 37 rows in blocks of 8, 4 and 1, against each row alone; 100 columns (the 4 × 6 tile)
    // against each column alone (8 × 2); k = 600, three sweeps.
    let (m, k, n) = (37, 600, 100);
    let kq = k / 2;
    let mut gen = Gen(3);
    let (a, b) = (gen.vec::<f32>(m * k, 1.0), gen.vec::<f32>(k * n, 1.0));
    let (mut ap, mut bp) = (vec![0u32; m * kq], vec![0u32; kq * n]);
    bf16::pack_pairs(MatRef::new(&a, k, m, (1, k)), MatMut::new(&mut ap, kq, m, (1, kq)));
    bf16::pack_pairs(MatRef::new(&b, k, n, (n, 1)), MatMut::new(&mut bp, kq, n, (n, 1)));
    let bias = gen.vec::<f32>(n, 1.0);
    let mut whole = vec![0f32; m * n];
    let (ar, br) = (MatRef::new(&ap, m, kq, (kq, 1)), MatRef::new(&bp, kq, n, (n, 1)));
    gemm_pairs(s, ar, br, MatMut::new(&mut whole, m, n, (n, 1)), PairInit::ColBias(&bias));
    for i in 0..m {
        let mut row = vec![0f32; n];
        let ai = MatRef::new(&ap[i * kq..], 1, kq, (kq, 1));
        gemm_pairs(s, ai, br, MatMut::new(&mut row, 1, n, (n, 1)), PairInit::ColBias(&bias));
        assert_eq!(row, whole[i * n..(i + 1) * n], "row {i}");
    }
    for j in 0..n {
        let mut col = vec![0f32; m];
        let bj = MatRef::new(&bp[j..], kq, 1, (n, 1));
        gemm_pairs(s, ar, bj, MatMut::new(&mut col, m, 1, (1, 1)), PairInit::ColBias(&bias[j..j + 1]));
        let want: Vec<f32> = (0..m).map(|i| whole[i * n + j]).collect();
        assert_eq!(col, want, "column {j}");
    }
}

#[test]
fn mixed_precision_mlp_matches_the_f64_reference_within_bf16_error() {
    if !bf16::available() {
        eprintln!("skipped: this CPU has no AVX512_BF16");
        return;
    }
    for (i, c) in check::cases().iter().enumerate() {
        for r in check::mlp_bf16(c, 40 + i as u64, check::MLP_BF16_TOL) {
            assert!(r.passed(), "{r}");
        }
    }
}

#[test]
fn mixed_precision_mlp_is_bitwise_independent_of_thread_count() {
    if !bf16::available() {
        eprintln!("skipped: this CPU has no AVX512_BF16");
        return;
    }
    let bits = |threads: usize, c: &check::Case| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a pool");
        let r = pool.install(|| check::fused_bf16(c, 5)).expect("AVX512_BF16");
        let all = [&r.z, &r.a, &r.y, &r.dx, &r.grads[0], &r.grads[1], &r.grads[2], &r.grads[3]];
        let mut v: Vec<u32> = all.iter().flat_map(|t| t.iter().map(|x| x.to_bits())).collect();
        v.push(r.dg.to_bits());
        v
    };
    for c in check::cases().iter().filter(|c| c.s.b == 64) {
        assert_eq!(bits(1, c), bits(3, c), "{:?} {:?} → {}", c.axis, c.s, c.n_out);
    }
}
