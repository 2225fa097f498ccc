//! One vector interface, [`Simd`], over the instruction sets the kernels are written for:
//! AVX-512 (16 lanes), AVX2 + FMA (8 lanes) and Arm NEON (4 lanes). The GEMM micro-kernels and
//! the FMA-roof loop are written once against it and compiled once per instruction set, inside
//! a function that enables that set (`#[target_feature]`), as BLIS writes one micro-kernel
//! shape per architecture behind one interface.
//!
//! A value of an implementing type is a **token**: it can only be obtained from
//! `Avx512::detect`, `Avx2::detect` or `Neon::detect` (each compiled on its architecture only),
//! which check the CPU at run time. So
//! the register operations can be safe methods (the token proves the instructions exist);
//! loads, stores and prefetches take raw pointers and stay `unsafe`.
//!
//! Every operation is IEEE single precision, and `fma` is one fused multiply-add (one rounding)
//! on every set: a product written against this interface gives bitwise the same sums on all
//! three, which `tests/kernels.rs` checks level by level.

/// The vector operations the kernels need. `V` holds `LANES` floats; `W` holds 16, in as many
/// registers as that takes, for the dot-product kernel whose 16-lane partial sums (and the order
/// they are added in, [`Simd::sum16`]) must be the same on every set.
pub trait Simd: Copy + Send + Sync + 'static {
    /// One register of [`Simd::LANES`] floats.
    type V: Copy;
    /// Which lanes of a partial vector a load or store touches.
    type Mask: Copy;
    /// 16 floats, in one or more registers.
    type W: Copy;
    const LANES: usize;
    /// The instruction set's name, as `pmixer` prints it.
    const NAME: &'static str;
    /// Whether [`Simd::load_part`] costs about what a plain load does, so that a micro-kernel
    /// may use it in its inner loop (AVX-512's mask registers). Where it does not (AVX2's
    /// masks are vector registers, NEON's a copy through memory) the GEMM copies a partial
    /// panel of B into a zero-padded buffer first and reads that with plain loads.
    const CHEAP_PARTIAL_LOADS: bool;

    fn zero(self) -> Self::V;
    fn splat(self, x: f32) -> Self::V;
    /// `a·b + c`, rounded once.
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a·b`, lane by lane.
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a + b`, lane by lane.
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    /// The first `lanes` lanes (at most [`Simd::LANES`]; 0 is allowed and touches nothing).
    fn mask(self, lanes: usize) -> Self::Mask;

    /// # Safety
    /// `p` must be valid for reading `LANES` floats.
    unsafe fn load(self, p: *const f32) -> Self::V;
    /// The lanes in `m` from `p`, zeros elsewhere.
    ///
    /// # Safety
    /// `p` must be valid for reading the lanes in `m`.
    unsafe fn load_part(self, m: Self::Mask, p: *const f32) -> Self::V;
    /// # Safety
    /// `p` must be valid for writing `LANES` floats.
    unsafe fn store(self, p: *mut f32, v: Self::V);
    /// Stores the lanes in `m` only.
    ///
    /// # Safety
    /// `p` must be valid for writing the lanes in `m`.
    unsafe fn store_part(self, m: Self::Mask, p: *mut f32, v: Self::V);

    /// Asks for the 64-byte line holding `p` in L1, to be read. A hint: it never faults, so
    /// any address is sound.
    fn prefetch_read(self, p: *const f32);
    /// Asks for the line holding `p` in a state that lets it be written without a second
    /// request (x86's `prefetchw` where the CPU has it). Sound for any address.
    fn prefetch_write(self, p: *const f32);

    fn zero16(self) -> Self::W;
    /// `a·b + c` lane by lane over 16 lanes.
    fn fma16(self, a: Self::W, b: Self::W, c: Self::W) -> Self::W;
    /// The first `lanes` (≤ 16) of 16 floats from `p`, zeros after them.
    ///
    /// # Safety
    /// `p` must be valid for reading `lanes` floats.
    unsafe fn load16(self, lanes: usize, p: *const f32) -> Self::W;
    /// The sum of the 16 lanes l₀…l₁₅ of `w` in one fixed order:
    /// eᵢ = (lᵢ + lᵢ₊₈) + (lᵢ₊₄ + lᵢ₊₁₂) for i < 4, then (e₀ + e₂) + (e₁ + e₃).
    fn sum16(self, w: Self::W) -> f32;
    /// `sum16` of each of a 4 × 4 block, transposed: element `jj·4 + ii` is `sum16(s[ii][jj])`.
    /// Sets may override it with a faster tree that adds in the same order.
    #[inline(always)]
    fn sum16_block(self, s: &[[Self::W; 4]; 4]) -> [f32; 16] {
        let mut out = [0f32; 16];
        for (q, o) in out.iter_mut().enumerate() {
            *o = self.sum16(s[q % 4][q / 4]);
        }
        out
    }
}

/// [`Simd::sum16`]'s order, over the 16 lanes as an array: the scalar twin the sets' versions
/// are tested against, and the one NEON uses.
pub fn sum16_scalar(l: &[f32; 16]) -> f32 {
    let e: [f32; 4] = std::array::from_fn(|i| (l[i] + l[i + 8]) + (l[i + 4] + l[i + 12]));
    (e[0] + e[2]) + (e[1] + e[3])
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Simd;
    use std::arch::x86_64::*;

    /// AVX-512F with VL: 16-lane `zmm` registers, 32 of them, masked loads and stores. VL (every
    /// AVX-512 CPU since Skylake-SP has it) lets the 128- and 256-bit steps of a reduction use
    /// registers 16–31: without it, any value they touch must live in registers 0–15, which left
    /// a 5 × 4 block of accumulators too few registers and spilled it (`docs/performance.md`).
    #[derive(Clone, Copy, Debug)]
    pub struct Avx512(());

    impl Avx512 {
        /// The token, where the CPU has AVX-512F and VL.
        pub fn detect() -> Option<Self> {
            (is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl"))
                .then_some(Avx512(()))
        }
    }

    impl Simd for Avx512 {
        type V = __m512;
        type Mask = __mmask16;
        type W = __m512;
        const LANES: usize = 16;
        const CHEAP_PARTIAL_LOADS: bool = true;
        const NAME: &'static str = "avx512";

        #[inline(always)]
        fn zero(self) -> __m512 {
            // SAFETY: (this and every intrinsic below on registers only) the token exists only
            // where the CPU has AVX-512F and VL.
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        fn splat(self, x: f32) -> __m512 {
            // SAFETY: as in `zero`.
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        fn fma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
            // SAFETY: as in `zero`.
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn mul(self, a: __m512, b: __m512) -> __m512 {
            // SAFETY: as in `zero`.
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        fn add(self, a: __m512, b: __m512) -> __m512 {
            // SAFETY: as in `zero`.
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        fn mask(self, lanes: usize) -> __mmask16 {
            if lanes >= 16 {
                0xffff
            } else {
                ((1u32 << lanes) - 1) as __mmask16
            }
        }
        #[inline(always)]
        unsafe fn load(self, p: *const f32) -> __m512 {
            // SAFETY: the caller guarantees 16 readable floats at p.
            unsafe { _mm512_loadu_ps(p) }
        }
        /// A plain load when the mask covers every lane (a masked one costs more on some cores,
        /// AMD's Zen 4 among them).
        #[inline(always)]
        unsafe fn load_part(self, m: __mmask16, p: *const f32) -> __m512 {
            // SAFETY: the caller guarantees the lanes in m are readable; masked-off lanes are
            // not accessed.
            unsafe {
                if m == 0xffff {
                    _mm512_loadu_ps(p)
                } else {
                    _mm512_maskz_loadu_ps(m, p)
                }
            }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32, v: __m512) {
            // SAFETY: the caller guarantees 16 writable floats at p.
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn store_part(self, m: __mmask16, p: *mut f32, v: __m512) {
            // SAFETY: the caller guarantees the lanes in m are writable; no other is written.
            unsafe {
                if m == 0xffff {
                    _mm512_storeu_ps(p, v)
                } else {
                    _mm512_mask_storeu_ps(p, m, v)
                }
            }
        }
        #[inline(always)]
        fn prefetch_read(self, p: *const f32) {
            // SAFETY: a prefetch never faults.
            unsafe { _mm_prefetch(p as *const i8, _MM_HINT_T0) }
        }
        /// `prefetchw`, which every x86-64 CPU with AVX-512 has.
        #[inline(always)]
        fn prefetch_write(self, p: *const f32) {
            // SAFETY: a prefetch never faults; the instruction exists on every AVX-512 CPU.
            unsafe {
                std::arch::asm!("prefetchw [{}]", in(reg) p, options(nostack, preserves_flags, readonly))
            }
        }
        #[inline(always)]
        fn zero16(self) -> __m512 {
            self.zero()
        }
        #[inline(always)]
        fn fma16(self, a: __m512, b: __m512, c: __m512) -> __m512 {
            self.fma(a, b, c)
        }
        #[inline(always)]
        unsafe fn load16(self, lanes: usize, p: *const f32) -> __m512 {
            // SAFETY: the caller guarantees `lanes` readable floats.
            unsafe { self.load_part(self.mask(lanes), p) }
        }
        fn sum16(self, w: __m512) -> f32 {
            let mut l = [0f32; 16];
            // SAFETY: l holds 16 floats.
            unsafe { self.store(l.as_mut_ptr(), w) };
            super::sum16_scalar(&l)
        }
        /// The sixteen sums at once: reducing the vectors one by one costs about ten shuffles
        /// and adds each (160 a block, more than its 128 FMAs at k = 128); this tree costs 45,
        /// and adds in [`Simd::sum16`]'s order. With 128-bit lanes L0..L3 of v_q, q = 4ii + jj:
        /// 1. pairs (v_2t, v_2t+1) → u_t = [x.L0+x.L2, x.L1+x.L3, y.L0+y.L2, y.L1+y.L3];
        /// 2. pairs (u_2t, u_2t+1) → w_t, whose lane L holds the four eᵢ of v_(4t+L);
        /// 3. (w_0, w_1), (w_2, w_3) interleaved within lanes and added: e₀+e₂ and e₁+e₃;
        /// 4. one last interleave and add: lane L = [Σv_L, Σv_(4+L), Σv_(8+L), Σv_(12+L)], so
        ///    element 4L + e is Σ v_(4e+L) = Σ s\[e\]\[L\].
        #[inline(always)]
        fn sum16_block(self, s: &[[__m512; 4]; 4]) -> [f32; 16] {
            let v = |q: usize| s[q / 4][q % 4]; // a copy of a register: no instruction
            let mut out = [0f32; 16];
            // SAFETY: register shuffles and adds (the token proves AVX-512F and VL); `out` holds 16.
            unsafe {
                let mut u = [_mm512_setzero_ps(); 8];
                for (t, ut) in u.iter_mut().enumerate() {
                    let (x, y) = (v(2 * t), v(2 * t + 1));
                    *ut = _mm512_add_ps(_mm512_shuffle_f32x4(x, y, 0x44), _mm512_shuffle_f32x4(x, y, 0xEE));
                }
                let mut w = [_mm512_setzero_ps(); 4];
                for (t, wt) in w.iter_mut().enumerate() {
                    let (p, q) = (u[2 * t], u[2 * t + 1]);
                    *wt = _mm512_add_ps(_mm512_shuffle_f32x4(p, q, 0x88), _mm512_shuffle_f32x4(p, q, 0xDD));
                }
                let x0 = _mm512_add_ps(_mm512_unpacklo_ps(w[0], w[1]), _mm512_unpackhi_ps(w[0], w[1]));
                let x1 = _mm512_add_ps(_mm512_unpacklo_ps(w[2], w[3]), _mm512_unpackhi_ps(w[2], w[3]));
                let r = _mm512_add_ps(_mm512_shuffle_ps(x0, x1, 0x44), _mm512_shuffle_ps(x0, x1, 0xEE));
                _mm512_storeu_ps(out.as_mut_ptr(), r);
            }
            out
        }
    }

    /// AVX2 with FMA3: 8-lane `ymm` registers, 16 of them; partial vectors through
    /// `vmaskmovps` (masked-off lanes are not accessed).
    #[derive(Clone, Copy, Debug)]
    pub struct Avx2(());

    impl Avx2 {
        /// The token, where the CPU has AVX2 and FMA.
        pub fn detect() -> Option<Self> {
            (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(Avx2(()))
        }
    }

    impl Simd for Avx2 {
        type V = __m256;
        type Mask = (__m256i, bool);
        /// Lanes 0–7 and 8–15.
        type W = [__m256; 2];
        const LANES: usize = 8;
        const CHEAP_PARTIAL_LOADS: bool = false;
        const NAME: &'static str = "avx2";

        #[inline(always)]
        fn zero(self) -> __m256 {
            // SAFETY: (this and every intrinsic below on registers only) the token exists only
            // where the CPU has AVX2 and FMA.
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        fn splat(self, x: f32) -> __m256 {
            // SAFETY: as in `zero`.
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        fn fma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
            // SAFETY: as in `zero`.
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn mul(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: as in `zero`.
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        fn add(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: as in `zero`.
            unsafe { _mm256_add_ps(a, b) }
        }
        /// Lane i is on when i < lanes (its sign bit set); the flag says whether all are.
        #[inline(always)]
        fn mask(self, lanes: usize) -> (__m256i, bool) {
            let n = lanes.min(8) as i32;
            // SAFETY: as in `zero`.
            let m = unsafe {
                _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
            };
            (m, n == 8)
        }
        #[inline(always)]
        unsafe fn load(self, p: *const f32) -> __m256 {
            // SAFETY: the caller guarantees 8 readable floats at p.
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn load_part(self, (m, full): (__m256i, bool), p: *const f32) -> __m256 {
            // SAFETY: the caller guarantees the lanes in m are readable; `vmaskmovps` does not
            // access the others.
            unsafe {
                if full {
                    _mm256_loadu_ps(p)
                } else {
                    _mm256_maskload_ps(p, m)
                }
            }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32, v: __m256) {
            // SAFETY: the caller guarantees 8 writable floats at p.
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn store_part(self, (m, full): (__m256i, bool), p: *mut f32, v: __m256) {
            // SAFETY: the caller guarantees the lanes in m are writable; no other is written.
            unsafe {
                if full {
                    _mm256_storeu_ps(p, v)
                } else {
                    _mm256_maskstore_ps(p, m, v)
                }
            }
        }
        #[inline(always)]
        fn prefetch_read(self, p: *const f32) {
            // SAFETY: a prefetch never faults.
            unsafe { _mm_prefetch(p as *const i8, _MM_HINT_T0) }
        }
        /// A read prefetch: not every AVX2 CPU has `prefetchw`.
        #[inline(always)]
        fn prefetch_write(self, p: *const f32) {
            // SAFETY: a prefetch never faults.
            unsafe { _mm_prefetch(p as *const i8, _MM_HINT_T0) }
        }
        #[inline(always)]
        fn zero16(self) -> [__m256; 2] {
            [self.zero(); 2]
        }
        #[inline(always)]
        fn fma16(self, a: [__m256; 2], b: [__m256; 2], c: [__m256; 2]) -> [__m256; 2] {
            [self.fma(a[0], b[0], c[0]), self.fma(a[1], b[1], c[1])]
        }
        #[inline(always)]
        unsafe fn load16(self, lanes: usize, p: *const f32) -> [__m256; 2] {
            // SAFETY: the caller guarantees `lanes` readable floats; each half reads only its
            // own lanes under it.
            unsafe {
                [
                    self.load_part(self.mask(lanes), p),
                    self.load_part(self.mask(lanes.saturating_sub(8)), p.wrapping_add(8)),
                ]
            }
        }
        /// lo + hi gives lᵢ + lᵢ₊₈; its two 128-bit halves added give the eᵢ; then
        /// (e₀ + e₂) + (e₁ + e₃).
        #[inline(always)]
        fn sum16(self, [lo, hi]: [__m256; 2]) -> f32 {
            // SAFETY: as in `zero`.
            unsafe {
                let u = _mm256_add_ps(lo, hi);
                let e = _mm_add_ps(_mm256_castps256_ps128(u), _mm256_extractf128_ps(u, 1));
                let t = _mm_add_ps(e, _mm_movehl_ps(e, e));
                _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)))
            }
        }
    }
}

/// AVX512_BF16's `VDPBF16PS` (pairs of bf16 multiplied and added into f32 lanes): the
/// instruction mixed precision would run its products on. Only its roof is measured so far.
#[cfg(target_arch = "x86_64")]
mod x86_bf16 {
    use std::arch::x86_64::*;

    /// The token, where the CPU has AVX-512F, BW and VL and AVX512_BF16 (every CPU with the
    /// last has the others).
    #[derive(Clone, Copy, Debug)]
    pub struct Avx512Bf16(());

    impl Avx512Bf16 {
        /// The token where the CPU has the instructions. Asked once per packing pass, so the
        /// answer is kept after the first time (0: not asked yet, 1: no, 2: yes).
        #[inline]
        pub fn detect() -> Option<Self> {
            use std::sync::atomic::{AtomicU8, Ordering};
            static HAS: AtomicU8 = AtomicU8::new(0);
            let has = match HAS.load(Ordering::Relaxed) {
                0 => {
                    let has = is_x86_feature_detected!("avx512f")
                        && is_x86_feature_detected!("avx512bw")
                        && is_x86_feature_detected!("avx512vl")
                        && is_x86_feature_detected!("avx512bf16");
                    HAS.store(1 + u8::from(has), Ordering::Relaxed);
                    has
                }
                known => known == 2,
            };
            has.then_some(Avx512Bf16(()))
        }

        /// `rounds` rounds of `N` independent `acc ← acc + Σ_pair a·b` chains (`VDPBF16PS` on
        /// 16 f32 lanes, each adding two bf16 products: 64 FLOPs an instruction); one lane of
        /// their sum, so that nothing is optimised away.
        pub fn dot_chains<const N: usize>(self, rounds: usize, seed: f32) -> f32 {
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
            fn run<const N: usize>(rounds: usize, seed: f32) -> f32 {
                let mut acc = [_mm512_set1_ps(seed); N];
                let a = _mm512_set1_ps(0.999_9);
                let pairs = _mm512_cvtne2ps_pbh(a, a);
                for _ in 0..rounds {
                    for v in acc.iter_mut() {
                        *v = _mm512_dpbf16_ps(*v, pairs, pairs);
                    }
                }
                let total = acc.iter().fold(_mm512_setzero_ps(), |t, &v| _mm512_add_ps(t, v));
                _mm512_reduce_add_ps(total)
            }
            // SAFETY: the token exists only where the CPU has AVX-512F, BW, VL and AVX512_BF16.
            unsafe { run::<N>(rounds, seed) }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86_bf16::Avx512Bf16;

/// Off x86-64 there is no AVX512_BF16: a token that is never made (its field is private and
/// `detect` returns `None`), so that the bf16 kernels, which take one, compile on every
/// architecture and run on none but x86-64. (An uninhabited type would say the same to the
/// compiler, which then flags every caller's code after `detect()` as unreachable.)
#[cfg(not(target_arch = "x86_64"))]
#[derive(Clone, Copy, Debug)]
pub struct Avx512Bf16(());

#[cfg(not(target_arch = "x86_64"))]
impl Avx512Bf16 {
    /// Never: see the type.
    pub fn detect() -> Option<Self> {
        None
    }

    /// Where a bf16 kernel would run: unreachable, as no token exists here.
    pub fn absent(self) -> ! {
        unreachable!("an Avx512Bf16 token off x86-64")
    }
}

#[cfg(target_arch = "aarch64")]
pub use arm::Neon;

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::Simd;
    use std::arch::aarch64::*;

    /// Arm NEON (Advanced SIMD): 4-lane `q` registers, 32 of them, `fmla`. Every AArch64 CPU
    /// has it; partial vectors go through a small buffer, as NEON has no masked loads.
    #[derive(Clone, Copy, Debug)]
    pub struct Neon(());

    impl Neon {
        /// The token, where the CPU has NEON (every AArch64 Linux machine).
        pub fn detect() -> Option<Self> {
            std::arch::is_aarch64_feature_detected!("neon").then_some(Neon(()))
        }
    }

    impl Simd for Neon {
        type V = float32x4_t;
        /// How many leading lanes.
        type Mask = usize;
        type W = [float32x4_t; 4];
        const LANES: usize = 4;
        const CHEAP_PARTIAL_LOADS: bool = false;
        const NAME: &'static str = "neon";

        #[inline(always)]
        fn zero(self) -> float32x4_t {
            // SAFETY: (this and every intrinsic below on registers only) the token exists only
            // where the CPU has NEON.
            unsafe { vdupq_n_f32(0.0) }
        }
        #[inline(always)]
        fn splat(self, x: f32) -> float32x4_t {
            // SAFETY: as in `zero`.
            unsafe { vdupq_n_f32(x) }
        }
        /// `fmla`: c + a·b, rounded once.
        #[inline(always)]
        fn fma(self, a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
            // SAFETY: as in `zero`.
            unsafe { vfmaq_f32(c, a, b) }
        }
        #[inline(always)]
        fn mul(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
            // SAFETY: as in `zero`.
            unsafe { vmulq_f32(a, b) }
        }
        #[inline(always)]
        fn add(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
            // SAFETY: as in `zero`.
            unsafe { vaddq_f32(a, b) }
        }
        #[inline(always)]
        fn mask(self, lanes: usize) -> usize {
            lanes.min(4)
        }
        #[inline(always)]
        unsafe fn load(self, p: *const f32) -> float32x4_t {
            // SAFETY: the caller guarantees 4 readable floats at p.
            unsafe { vld1q_f32(p) }
        }
        #[inline(always)]
        unsafe fn load_part(self, m: usize, p: *const f32) -> float32x4_t {
            if m == 4 {
                // SAFETY: the caller guarantees 4 readable floats.
                return unsafe { vld1q_f32(p) };
            }
            let mut t = [0f32; 4];
            // SAFETY: the caller guarantees m readable floats at p; t holds 4 ≥ m.
            unsafe {
                std::ptr::copy_nonoverlapping(p, t.as_mut_ptr(), m);
                vld1q_f32(t.as_ptr())
            }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32, v: float32x4_t) {
            // SAFETY: the caller guarantees 4 writable floats at p.
            unsafe { vst1q_f32(p, v) }
        }
        #[inline(always)]
        unsafe fn store_part(self, m: usize, p: *mut f32, v: float32x4_t) {
            let mut t = [0f32; 4];
            // SAFETY: t holds 4 floats; the caller guarantees m writable floats at p.
            unsafe {
                vst1q_f32(t.as_mut_ptr(), v);
                std::ptr::copy_nonoverlapping(t.as_ptr(), p, m);
            }
        }
        #[inline(always)]
        fn prefetch_read(self, p: *const f32) {
            // SAFETY: `prfm` never faults.
            unsafe {
                std::arch::asm!("prfm pldl1keep, [{}]", in(reg) p, options(nostack, preserves_flags, readonly))
            }
        }
        #[inline(always)]
        fn prefetch_write(self, p: *const f32) {
            // SAFETY: `prfm` never faults.
            unsafe {
                std::arch::asm!("prfm pstl1keep, [{}]", in(reg) p, options(nostack, preserves_flags, readonly))
            }
        }
        #[inline(always)]
        fn zero16(self) -> [float32x4_t; 4] {
            [self.zero(); 4]
        }
        #[inline(always)]
        fn fma16(self, a: [float32x4_t; 4], b: [float32x4_t; 4], c: [float32x4_t; 4]) -> [float32x4_t; 4] {
            [
                self.fma(a[0], b[0], c[0]),
                self.fma(a[1], b[1], c[1]),
                self.fma(a[2], b[2], c[2]),
                self.fma(a[3], b[3], c[3]),
            ]
        }
        #[inline(always)]
        unsafe fn load16(self, lanes: usize, p: *const f32) -> [float32x4_t; 4] {
            let mut w = [self.zero(); 4];
            for (q, v) in w.iter_mut().enumerate() {
                // SAFETY: the caller guarantees `lanes` readable floats; quarter q reads only
                // its own lanes under it.
                *v = unsafe { self.load_part(lanes.saturating_sub(4 * q).min(4), p.wrapping_add(4 * q)) };
            }
            w
        }
        /// Quarters q0..q3 are lanes 0–3, 4–7, 8–11, 12–15: e = (q0 + q2) + (q1 + q3), then
        /// (e₀ + e₂) + (e₁ + e₃).
        #[inline(always)]
        fn sum16(self, [q0, q1, q2, q3]: [float32x4_t; 4]) -> f32 {
            // SAFETY: as in `zero`.
            unsafe {
                let e = vaddq_f32(vaddq_f32(q0, q2), vaddq_f32(q1, q3));
                let t = vadd_f32(vget_low_f32(e), vget_high_f32(e));
                vget_lane_f32::<0>(t) + vget_lane_f32::<1>(t)
            }
        }
    }
}
