//! The CPU's f32 peak, a ceiling no gemm can pass, two ways: in theory, cores × clock ×
//! vector lanes × 2 (a fused multiply-add is two operations) × FMA units per core
//! ([`CpuPeak`]); and measured, as the rate of independent multiply-add chains on every core
//! at once ([`measured_fma_peak`]), which sees the clock the cores really run at.
//!
//! The cores, clock and instruction sets come from the operating system (`/proc/cpuinfo`,
//! `cpufreq`); the FMA units per core cannot be read from the CPU and are assumed to be two,
//! which is right for Intel server cores (Skylake-SP Gold/Platinum onwards, AVX-512) and
//! for AVX2 cores of both vendors since Haswell and Zen 2. Xeon Bronze/Silver parts with one
//! 512-bit unit have half this peak; AMD Zen 4 runs 512-bit instructions as two 256-bit
//! halves, so AMD cores are counted at 256 bits. The clock is the highest the kernel reports
//! (`cpuinfo_max_freq`, else `cpu MHz`); a virtual machine often reports only its base clock,
//! and turbo can then carry a gemm past this "peak": the report shows the inputs so a reader
//! can judge.

use serde::Serialize;

/// The peak and what it was computed from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuPeak {
    /// Physical cores this process may use.
    pub cores: usize,
    /// Clock, GHz.
    pub ghz: f64,
    /// f32 lanes of the widest vector unit counted (16 for AVX-512, 8 for AVX2, 4 for SSE).
    pub lanes: usize,
    /// The instruction set counted.
    pub isa: &'static str,
    /// FMA units per core (assumed; see the module documentation).
    pub fma_units: usize,
    /// cores × GHz × lanes × 2 × FMA units.
    pub gflops: f64,
}

impl CpuPeak {
    /// This machine's peak; `None` where the operating system does not say the clock or
    /// cores (anything but Linux, some containers).
    pub fn detect() -> Option<CpuPeak> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
        let max_khz =
            std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
                .ok()
                .and_then(|s| s.trim().parse::<f64>().ok());
        let usable = std::thread::available_parallelism().map_or(1, usize::from);
        Self::from_cpuinfo(&cpuinfo, max_khz, usable)
    }

    /// The peak from the text of `/proc/cpuinfo`, `cpufreq`'s maximum (kHz) if known, and the
    /// number of logical CPUs this process may use.
    pub fn from_cpuinfo(cpuinfo: &str, max_khz: Option<f64>, usable: usize) -> Option<CpuPeak> {
        let blocks: Vec<&str> = cpuinfo
            .split("\n\n")
            .filter(|b| b.contains("processor"))
            .collect();
        let first = blocks.first()?;
        let field = |block: &str, key: &str| -> Option<String> {
            block.lines().find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim() == key).then(|| v.trim().to_string())
            })
        };
        // Hyperthreads share their core's FMA units: count (package, core) pairs.
        let mut cores: Vec<(String, String)> = blocks
            .iter()
            .map(|b| {
                (
                    field(b, "physical id").unwrap_or_default(),
                    field(b, "core id")
                        .unwrap_or_else(|| field(b, "processor").unwrap_or_default()),
                )
            })
            .collect();
        cores.sort();
        cores.dedup();
        let threads_per_core = (blocks.len() / cores.len().max(1)).max(1);
        let cores = cores.len().min(usable.div_ceil(threads_per_core)).max(1);
        let mhz = blocks
            .iter()
            .filter_map(|b| field(b, "cpu MHz")?.parse::<f64>().ok())
            .fold(0.0, f64::max);
        let ghz = max_khz.map_or(mhz / 1e3, |khz| (khz / 1e6).max(mhz / 1e3));
        if ghz <= 0.0 {
            return None;
        }
        let flags = field(first, "flags").unwrap_or_default();
        let has = |flag: &str| flags.split_whitespace().any(|f| f == flag);
        let amd = field(first, "vendor_id").is_some_and(|v| v == "AuthenticAMD");
        let (lanes, isa) = if has("avx512f") && !amd {
            (16, "AVX-512")
        } else if has("avx2") && has("fma") {
            (8, "AVX2 + FMA")
        } else {
            (4, "SSE")
        };
        let fma_units = 2;
        Some(CpuPeak {
            cores,
            ghz,
            lanes,
            isa,
            fma_units,
            gflops: cores as f64 * ghz * (lanes * 2 * fma_units) as f64,
        })
    }

    /// One line for a report: the peak and its inputs.
    pub fn describe(&self) -> String {
        format!(
            "{} cores × {:.2} GHz × {} lanes ({}) × 2 (FMA) × {} units = {:.0} GFLOP/s",
            self.cores, self.ghz, self.lanes, self.isa, self.fma_units, self.gflops
        )
    }
}

/// Independent multiply-add chains of [`fma_chains`]: twelve 16-lane vectors, enough to keep
/// two FMA units of 4-cycle latency busy (with 8-lane vectors, twelve per pass).
const CHAINS: usize = 12 * 16;

/// `iterations` dependent multiply-adds on each of the [`CHAINS`] accumulators, compiled for
/// the widest vectors the CPU has (picked at run time).
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn fma_chains(acc: &mut [f32; CHAINS], iterations: usize, m: f32, c: f32) {
    // The chains run in passes that fit the vector registers: all twelve 16-lane vectors at
    // once with AVX-512 (32 registers); with AVX2 (16 registers) or NEON (32 of 4 lanes)
    // they would spill to memory and time the loads and stores instead (on an AVX2 host
    // the one pass measured 170 GFLOP/s, below candle's gemm at 180), so there they run as
    // two passes of twelve 8-lane (twenty-four 4-lane) vectors.
    #[multiversion::target::target_cfg(target_feature = "avx512f")]
    const PASS: usize = CHAINS;
    #[multiversion::target::target_cfg(not(target_feature = "avx512f"))]
    const PASS: usize = CHAINS / 2;
    for pass in acc.as_chunks_mut::<PASS>().0 {
        // A local copy, so the accumulators live in registers rather than memory.
        let mut local = *pass;
        for _ in 0..iterations {
            for a in local.iter_mut() {
                *a = a.mul_add(m, c);
            }
        }
        *pass = local;
    }
}

/// The f32 multiply-add rate this machine sustains on all usable cores at once, GFLOP/s:
/// a measured ceiling, which includes turbo clocks the operating system may not report. It
/// runs for about `seconds` (plus a short warm-up and calibration).
pub fn measured_fma_peak(seconds: f64) -> f64 {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let run = |iterations: usize| -> f64 {
        let started = std::time::Instant::now();
        std::thread::scope(|scope| {
            for t in 0..threads {
                scope.spawn(move || {
                    let mut acc = [t as f32; CHAINS];
                    fma_chains(&mut acc, iterations, std::hint::black_box(0.999_99), 1e-6);
                    std::hint::black_box(acc);
                });
            }
        });
        started.elapsed().as_secs_f64()
    };
    // The first run wakes the cores' wide units and clocks up; calibrate on the second,
    // then time one of the asked length.
    let calibration = 200_000;
    run(calibration);
    let short = run(calibration).max(1e-6);
    let iterations = ((seconds / short) * calibration as f64).max(calibration as f64) as usize;
    let elapsed = run(iterations);
    (threads * iterations * CHAINS * 2) as f64 / elapsed / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(processor: usize, core: usize, vendor: &str, mhz: f64, flags: &str) -> String {
        format!(
            "processor\t: {processor}\nvendor_id\t: {vendor}\nphysical id\t: 0\ncore id\t\t: {core}\ncpu MHz\t\t: {mhz:.3}\nflags\t\t: fpu sse {flags}\n"
        )
    }

    fn machine(cpus: &[String]) -> String {
        cpus.join("\n") + "\n"
    }

    /// This project's AVX-512 host: 2 cores at 2.1 GHz, 16 lanes, 2 units:
    /// 2 × 2.1 × 16 × 2 × 2 = 268.8 GFLOP/s.
    #[test]
    fn two_avx512_cores_at_2_1_ghz_peak_at_268_8() {
        let text = machine(&[
            cpu(0, 0, "GenuineIntel", 2100.0, "avx2 fma avx512f"),
            cpu(1, 1, "GenuineIntel", 2100.0, "avx2 fma avx512f"),
        ]);
        let peak = CpuPeak::from_cpuinfo(&text, None, 2).unwrap();
        assert_eq!((peak.cores, peak.lanes, peak.isa), (2, 16, "AVX-512"));
        assert!((peak.gflops - 268.8).abs() < 1e-9, "{peak:?}");
    }

    /// Two hyperthreads of one AVX2 core at 3.0 GHz (cpufreq says 3.5): 1 × 3.5 × 8 × 2 × 2
    /// = 112 GFLOP/s.
    #[test]
    fn hyperthreads_share_a_core_and_cpufreq_gives_the_clock() {
        let text = machine(&[
            cpu(0, 0, "GenuineIntel", 3000.0, "avx2 fma"),
            cpu(1, 0, "GenuineIntel", 3000.0, "avx2 fma"),
        ]);
        let peak = CpuPeak::from_cpuinfo(&text, Some(3_500_000.0), 2).unwrap();
        assert_eq!((peak.cores, peak.lanes), (1, 8));
        assert!((peak.gflops - 112.0).abs() < 1e-9, "{peak:?}");
    }

    /// Four cores, of which the process may use two; AMD with AVX-512 counts 256-bit lanes:
    /// 2 × 4.0 × 8 × 2 × 2 = 256 GFLOP/s.
    #[test]
    fn only_usable_cores_count_and_amd_counts_256_bits() {
        let cpus: Vec<String> = (0..4)
            .map(|i| cpu(i, i, "AuthenticAMD", 4000.0, "avx2 fma avx512f"))
            .collect();
        let peak = CpuPeak::from_cpuinfo(&machine(&cpus), None, 2).unwrap();
        assert_eq!((peak.cores, peak.lanes, peak.isa), (2, 8, "AVX2 + FMA"));
        assert!((peak.gflops - 256.0).abs() < 1e-9, "{peak:?}");
    }

    /// Each chain after n steps of a ← a·m + c is the geometric closed form.
    #[test]
    fn the_fma_chains_compute_what_they_time() {
        let (m, c, n) = (0.5f32, 1.0f32, 40);
        let mut acc = [0f32; CHAINS];
        acc[7] = 2.0;
        // The last chain is in the second pass where the chains run in two.
        acc[CHAINS - 1] = -3.0;
        fma_chains(&mut acc, n, m, c);
        let closed = |a0: f64| {
            let mn = 0.5f64.powi(n as i32);
            mn * a0 + (1.0 - mn) / 0.5
        };
        assert!((f64::from(acc[0]) - closed(0.0)).abs() < 1e-6, "{}", acc[0]);
        assert!((f64::from(acc[7]) - closed(2.0)).abs() < 1e-6, "{}", acc[7]);
        let last = f64::from(acc[CHAINS - 1]);
        assert!((last - closed(-3.0)).abs() < 1e-6, "{last}");
        assert!(measured_fma_peak(0.01) > 0.0);
    }

    #[test]
    fn no_clock_no_peak() {
        let text = "processor\t: 0\nflags\t\t: avx2 fma\n\n";
        assert_eq!(CpuPeak::from_cpuinfo(text, None, 1), None);
    }
}
