//! The machine's own ceilings, measured in the running process: the FMA peak of the instruction
//! set the kernels dispatch to, and the sustained memory bandwidth (a STREAM-style triad).
//!
//! Nothing here is looked up in a table. Whether a core retires one or two 512-bit FMAs a cycle
//! (Zen 4 splits each into two 256-bit halves; Zen 5 and some Intel server cores have two full
//! units, others one), and how fast it clocks today, only a measurement says. The FMA loop keeps
//! 16–24 independent accumulators in registers, more than latency × pipes (4 × 2 on the
//! cores above), and touches no memory, so the only limit is the FMA units.

use crate::isa::Simd;
use crate::simd::Level;
use rayon::prelude::*;
use std::time::Instant;

// Independent accumulator chains the FMA loop keeps in flight at each level: enough to cover a
// 4-cycle latency on 2–4 pipes, and few enough to stay in the set's registers (32 zmm, 16 ymm,
// 32 NEON q; the generic loop's 8 chains of 4 lanes fill 8 SSE registers).
#[cfg(target_arch = "x86_64")]
const AVX512_CHAINS: usize = 16;
#[cfg(target_arch = "x86_64")]
const AVX2_CHAINS: usize = 12;
#[cfg(target_arch = "aarch64")]
const NEON_CHAINS: usize = 24;
const GENERIC_CHAINS: usize = 8;

/// `rounds` rounds of `N` independent `acc ← acc·a + b` chains (each an FMA on `S::LANES`
/// lanes), returning one lane of their sum so that nothing is optimised away.
#[inline(always)]
fn fma_chains<S: Simd, const N: usize>(s: S, rounds: usize, seed: f32) -> f32 {
    let mut acc = [s.splat(seed); N];
    let (a, b) = (s.splat(0.999_9), s.splat(1e-4));
    for _ in 0..rounds {
        for v in acc.iter_mut() {
            *v = s.fma(*v, a, b);
        }
    }
    let total = acc.iter().fold(s.zero(), |t, &v| s.fma(v, a, t));
    let mut out = [0f32; 16];
    // SAFETY: `out` holds 16 ≥ LANES floats.
    unsafe { s.store(out.as_mut_ptr(), total) };
    out[0]
}

/// The generic level's loop: the same chains on 4-lane arrays with a separate multiply and add
/// (which baseline x86-64 vectorises to SSE `mulps`/`addps`; 2 FLOPs a lane, like an FMA).
fn mul_add_chains(rounds: usize, seed: f32) -> f32 {
    let mut acc = [[seed; 4]; GENERIC_CHAINS];
    for _ in 0..rounds {
        for v in acc.iter_mut() {
            for x in v.iter_mut() {
                *x = *x * 0.999_9 + 1e-4;
            }
        }
    }
    acc.iter().flatten().sum()
}

/// Runs `rounds` rounds of the FMA loop of `level` on this thread; returns the FLOPs done.
fn fma_loop(level: Level, rounds: usize) -> f64 {
    let seed = std::hint::black_box(1.0f32);
    // The loop's result, and the lanes it multiplies per round (lanes × chains).
    let (result, lanes) = match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => {
            use crate::isa::Avx512;
            #[target_feature(enable = "avx512f,avx512vl")]
            fn run(s: Avx512, rounds: usize, seed: f32) -> f32 {
                fma_chains::<_, AVX512_CHAINS>(s, rounds, seed)
            }
            let s = Avx512::detect().expect("level() reports AVX-512 only where the CPU has it");
            // SAFETY: the token proves the CPU has AVX-512F and VL.
            (unsafe { run(s, rounds, seed) }, 16 * AVX512_CHAINS)
        }
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => {
            use crate::isa::Avx2;
            #[target_feature(enable = "avx2,fma")]
            fn run(s: Avx2, rounds: usize, seed: f32) -> f32 {
                fma_chains::<_, AVX2_CHAINS>(s, rounds, seed)
            }
            let s = Avx2::detect().expect("level() reports AVX2 only where the CPU has it");
            // SAFETY: the token proves the CPU has AVX2 and FMA.
            (unsafe { run(s, rounds, seed) }, 8 * AVX2_CHAINS)
        }
        #[cfg(target_arch = "aarch64")]
        Level::Neon => {
            let s = crate::isa::Neon::detect().expect("level() reports NEON only where the CPU has it");
            (fma_chains::<_, NEON_CHAINS>(s, rounds, seed), 4 * NEON_CHAINS)
        }
        _ => (mul_add_chains(rounds, seed), 4 * GENERIC_CHAINS),
    };
    std::hint::black_box(result);
    (rounds * lanes * 2) as f64
}

/// GFLOP/s of `level`'s FMA loop on every thread of the current rayon pool at once (each thread
/// its own loop): the median of 7 runs of about 20 ms, after one calibrating run.
pub fn fma_peak_gflops(level: Level) -> f64 {
    median_rate(7, |rounds| {
        let t = Instant::now();
        let flops: f64 = rayon::broadcast(|_| fma_loop(level, rounds)).iter().sum();
        (flops, t.elapsed().as_secs_f64())
    })
}

/// GFLOP/s of `level`'s FMA loop on the calling thread alone (the other threads idle): the
/// per-thread roof each op's rate is set against.
pub fn fma_peak_gflops_one_thread(level: Level) -> f64 {
    median_rate(7, |rounds| {
        let t = Instant::now();
        let flops = fma_loop(level, rounds);
        (flops, t.elapsed().as_secs_f64())
    })
}

/// Independent chains of the bf16 loop (`VDPBF16PS` has the FMA's latency and pipes on the
/// cores that have it).
#[cfg(target_arch = "x86_64")]
const BF16_CHAINS: usize = 16;

/// GFLOP/s of bf16 pair products accumulated in f32 (`VDPBF16PS`, 64 FLOPs an instruction) on
/// every thread at once, where the CPU has AVX512_BF16; `None` elsewhere.
pub fn bf16_peak_gflops() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if let Some(s) = crate::isa::Avx512Bf16::detect() {
        return Some(median_rate(7, |rounds| {
            let t = Instant::now();
            let flops: f64 = rayon::broadcast(|_| {
                std::hint::black_box(s.dot_chains::<BF16_CHAINS>(rounds, std::hint::black_box(1.0)));
                (rounds * BF16_CHAINS * 64) as f64
            })
            .iter()
            .sum();
            (flops, t.elapsed().as_secs_f64())
        }));
    }
    None
}

/// [`bf16_peak_gflops`] on the calling thread alone: the per-thread roof of the pair products.
pub fn bf16_peak_gflops_one_thread() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if let Some(s) = crate::isa::Avx512Bf16::detect() {
        return Some(median_rate(7, |rounds| {
            let t = Instant::now();
            std::hint::black_box(s.dot_chains::<BF16_CHAINS>(rounds, std::hint::black_box(1.0)));
            ((rounds * BF16_CHAINS * 64) as f64, t.elapsed().as_secs_f64())
        }));
    }
    None
}

/// Runs `f(rounds)` (returning work done and seconds) `runs` times with `rounds` grown until a
/// run lasts about 20 ms; the median of the rates, in units of 1e9 a second.
fn median_rate(runs: usize, mut f: impl FnMut(usize) -> (f64, f64)) -> f64 {
    let mut rounds = 10_000;
    loop {
        let (_, secs) = f(rounds);
        if secs > 0.005 || rounds > 1 << 30 {
            rounds = ((rounds as f64) * 0.02 / secs.max(1e-9)).max(1.0) as usize;
            break;
        }
        rounds *= 8;
    }
    let mut rates: Vec<f64> = (0..runs)
        .map(|_| {
            let (work, secs) = f(rounds);
            work / secs / 1e9
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// Sustained memory bandwidth in GB/s: the STREAM triad `a[i] = b[i] + s·c[i]` over three arrays
/// of `floats` each (choose them several times the last-level cache), split over the current
/// rayon pool in fixed slices that each thread also initialised (so each slice's pages belong to
/// the thread, and its NUMA node, that reads them). Counted as STREAM counts it, 12 bytes a
/// float (two reads, one write; the write's line fill is not counted). The median of 5 runs.
pub fn triad_gb_per_s(floats: usize) -> f64 {
    let threads = rayon::current_num_threads().max(1);
    let slice = floats.div_ceil(threads).next_multiple_of(16);
    let alloc = || -> Vec<Vec<f32>> {
        (0..threads)
            .into_par_iter()
            .map(|t| {
                let len = slice.min(floats.saturating_sub(t * slice));
                (0..len).map(|i| (i % 13) as f32).collect()
            })
            .collect()
    };
    let (mut a, b, c) = (alloc(), alloc(), alloc());
    let s = std::hint::black_box(0.5f32);
    let mut rates: Vec<f64> = (0..6)
        .map(|_| {
            let t = Instant::now();
            a.par_iter_mut().zip(&b).zip(&c).for_each(|((a, b), c)| {
                for ((a, &b), &c) in a.iter_mut().zip(b).zip(c) {
                    *a = b + s * c;
                }
            });
            std::hint::black_box(&a);
            12.0 * floats as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .skip(1)
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}
