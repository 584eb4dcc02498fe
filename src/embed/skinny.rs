//! Matrix products with few rows (one short query, or a candidate pair: up to `MAX_ROWS`
//! tokens) against a weight matrix, without packing.
//!
//! A general GEMM packs the weight matrix into panels on every call. With a handful of rows
//! that copy costs as much as the product itself, and it happens for every linear layer of
//! every pass. Here each 16-column strip of the row-major weights is read in place, once per
//! four rows, into eight AVX2 accumulators per four rows; the strips are shared out between
//! the threads the caller asks for. Used only on x86-64 CPUs with AVX2 and FMA (checked at run time); elsewhere the
//! caller keeps the general GEMM.

/// Products with more rows than this go to the general GEMM, which packs and reuses better.
pub const MAX_ROWS: usize = 48;

/// Whether this CPU can run [`matmul`].
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `c[m,n] = a[m,k] · b[k,n]`, all row-major, its 16-column strips shared out in `parts`
/// contiguous runs on rayon's pool (at most one run per strip). Callers check [`available`]
/// first.
pub fn matmul(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize, parts: usize) {
    let fits =
        |len: usize, rows: usize, cols: usize| rows.checked_mul(cols).is_some_and(|x| len >= x);
    assert!(fits(a.len(), m, k) && fits(b.len(), k, n) && fits(c.len(), m, n) && available());
    #[cfg(target_arch = "x86_64")]
    {
        let strips = n / 16;
        let (a, b, out) = (
            a.as_ptr() as usize,
            b.as_ptr() as usize,
            c.as_mut_ptr() as usize,
        );
        // SAFETY: the slices hold m*k, k*n and m*n elements (asserted above); each call
        // writes the columns [j0, j1) of c only, and the runs never overlap; AVX2 and
        // FMA are present (asserted above).
        let run = |j0: usize, j1: usize| unsafe {
            x86::columns(
                a as *const f32,
                b as *const f32,
                out as *mut f32,
                m,
                k,
                n,
                j0,
                j1,
            )
        };
        let parts = parts.clamp(1, strips.max(1));
        if parts == 1 {
            run(0, n);
        } else {
            // Run p covers strips [strips·p/parts, strips·(p+1)/parts); the last also takes the
            // columns past the last whole strip.
            let bound = |p: usize| {
                if p == parts {
                    n
                } else {
                    strips * p / parts * 16
                }
            };
            rayon::scope(|s| {
                for p in 1..parts {
                    s.spawn(move |_| run(bound(p), bound(p + 1)));
                }
                run(bound(0), bound(1));
            });
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (a, b, c, m, k, n, parts);
        unreachable!("skinny::available() is false off x86-64");
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Columns `[j0, j1)` of `c = a · b`: 16-column strips with the AVX2 kernel, then any
    /// remaining columns one at a time.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn columns(
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        m: usize,
        k: usize,
        n: usize,
        j0: usize,
        j1: usize,
    ) {
        let mut j = j0;
        while j + 16 <= j1 {
            let mut i = 0;
            while i + 4 <= m {
                unsafe { strip::<4>(a, b, c, i, j, k, n) };
                i += 4;
            }
            while i < m {
                unsafe { strip::<1>(a, b, c, i, j, k, n) };
                i += 1;
            }
            j += 16;
        }
        for i in 0..m {
            for jj in j..j1 {
                let mut s = 0.0f32;
                for p in 0..k {
                    s += unsafe { *a.add(i * k + p) * *b.add(p * n + jj) };
                }
                unsafe { *c.add(i * n + jj) = s };
            }
        }
    }

    /// Rows `i..i+R`, columns `j..j+16`: two accumulators per row, the strip of `b` read
    /// once for the R rows.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn strip<const R: usize>(
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        i: usize,
        j: usize,
        k: usize,
        n: usize,
    ) {
        let mut lo = [_mm256_setzero_ps(); R];
        let mut hi = [_mm256_setzero_ps(); R];
        for p in 0..k {
            let (w0, w1) = unsafe {
                let w = b.add(p * n + j);
                (_mm256_loadu_ps(w), _mm256_loadu_ps(w.add(8)))
            };
            for r in 0..R {
                let x = unsafe { _mm256_set1_ps(*a.add((i + r) * k + p)) };
                lo[r] = _mm256_fmadd_ps(x, w0, lo[r]);
                hi[r] = _mm256_fmadd_ps(x, w1, hi[r]);
            }
        }
        for r in 0..R {
            unsafe {
                let out = c.add((i + r) * n + j);
                _mm256_storeu_ps(out, lo[r]);
                _mm256_storeu_ps(out.add(8), hi[r]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_plain_product_on_every_shape_edge() {
        if !available() {
            // Nothing to compare: FusedBert keeps the general GEMM on this CPU (its own tests
            // cover that path). Said aloud so a run here is not read as covering the kernel.
            eprintln!("skinny kernel not tested: this CPU lacks AVX2 or FMA");
            return;
        }
        let mut state = 7u32;
        let mut next = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        // Rows below, at and past a block of four; columns with and without a tail strip.
        for (m, k, n) in [
            (1, 7, 16),
            (3, 33, 40),
            (4, 16, 32),
            (13, 64, 50),
            (7, 24, 100), // six strips and a tail: runs of uneven size
            (48, 20, 17),
            (5, 9, 7),  // fewer columns than one strip
            (0, 8, 32), // no rows
            (2, 0, 16), // nothing to sum: zeros
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| next()).collect();
            for parts in [1, 2, 3, 5, 64] {
                let mut c = vec![f32::NAN; m * n];
                matmul(&a, &b, &mut c, m, k, n, parts);
                for i in 0..m {
                    for j in 0..n {
                        let want: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                        let got = c[i * n + j];
                        assert!(
                            (got - want).abs() < 1e-4,
                            "{m}x{k}x{n} in {parts} runs [{i},{j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
