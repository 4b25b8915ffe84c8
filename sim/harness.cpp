// C++ harness around the Verilated rmsmp_top: a DDR model behind the AXI4 master, an AXI4-Lite
// driver for the registers, an AXI protocol checker on both ports, and a run loop. Called from
// Python through ctypes (rmsmp.sim.verilator).
//
// The DDR model has two modes: fixed (every read burst's first beat comes `latency` cycles after
// its AR handshake, a write response latency/2 cycles after the last W beat, READY high whenever
// there is room) and random (per-burst latency uniform in [min, max], READY low and VALID gaps
// with probability `backpressure` on every channel, seeded). Random mode also jitters the
// AXI4-Lite driver: idle cycles before each VALID, BREADY/RREADY low at random.
#include <algorithm>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "Vrmsmp_top.h"
#include "verilated.h"

namespace {

constexpr unsigned kBeatBytes = 8;
constexpr unsigned kMaxQueued = 8;
constexpr uint32_t kMaxBurstBeats = 16;  // Zynq HP ports are AXI3
constexpr uint64_t kPageBytes = 4096;    // no burst may cross a 4 KB boundary
constexpr uint64_t kSize8 = 3, kBurstIncr = 1;
constexpr int kAxilTimeout = 1000;
constexpr uint32_t kAxilMaxGap = 3;  // most idle cycles before an AXI4-Lite VALID, random mode
constexpr uint8_t kOkay = 0, kSlvErr = 2;
constexpr size_t kKeptViolations = 16;
constexpr int kAwFirst = 1, kWFirst = 2;  // sim_axil_write orders (0: AW and W together)

// splitmix64: the same stream for a seed on every compiler (unlike <random>'s distributions).
struct Rng {
    uint64_t state = 0;
    uint64_t next() {
        uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    bool chance(double p) { return double(next() >> 11) * 0x1.0p-53 < p; }
    uint32_t between(uint32_t lo, uint32_t hi) {
        return lo + uint32_t(next() % (uint64_t(hi) - lo + 1));
    }
};

// One channel in one cycle: VALID, READY and up to four payload fields.
struct Chan {
    bool valid = false, ready = false;
    uint64_t f[4] = {0, 0, 0, 0};
    bool fire() const { return valid && ready; }
};

// Every channel of both ports, sampled after the falling edge (the values the rising edge sees).
struct Sample {
    bool rst = true;
    Chan ar, aw, w, r, b;  // AXI4 master (r, b driven by the DDR model)
    Chan law, lw, lb, lar, lr;  // AXI4-Lite slave (lb, lr driven by the DUT)
};

Sample sample(const Vrmsmp_top* t) {
    Sample s;
    s.rst = t->rst;
    s.ar = {bool(t->m_axi_arvalid), bool(t->m_axi_arready),
            {t->m_axi_araddr, t->m_axi_arlen, t->m_axi_arsize, t->m_axi_arburst}};
    s.aw = {bool(t->m_axi_awvalid), bool(t->m_axi_awready),
            {t->m_axi_awaddr, t->m_axi_awlen, t->m_axi_awsize, t->m_axi_awburst}};
    s.w = {bool(t->m_axi_wvalid), bool(t->m_axi_wready),
           {t->m_axi_wdata, t->m_axi_wstrb, t->m_axi_wlast, 0}};
    s.r = {bool(t->m_axi_rvalid), bool(t->m_axi_rready),
           {t->m_axi_rdata, t->m_axi_rresp, t->m_axi_rlast, 0}};
    s.b = {bool(t->m_axi_bvalid), bool(t->m_axi_bready), {t->m_axi_bresp, 0, 0, 0}};
    s.law = {bool(t->s_axil_awvalid), bool(t->s_axil_awready), {t->s_axil_awaddr, 0, 0, 0}};
    s.lw = {bool(t->s_axil_wvalid), bool(t->s_axil_wready),
            {t->s_axil_wdata, t->s_axil_wstrb, 0, 0}};
    s.lb = {bool(t->s_axil_bvalid), bool(t->s_axil_bready), {t->s_axil_bresp, 0, 0, 0}};
    s.lar = {bool(t->s_axil_arvalid), bool(t->s_axil_arready), {t->s_axil_araddr, 0, 0, 0}};
    s.lr = {bool(t->s_axil_rvalid), bool(t->s_axil_rready),
            {t->s_axil_rdata, t->s_axil_rresp, 0, 0}};
    return s;
}

// Counts AXI rule violations and keeps a description of the first few.
struct Checker {
    uint64_t count = 0;
    std::vector<std::string> first;
    Sample prev;
    std::deque<uint32_t> aw_beats;  // lengths of accepted AW bursts whose W beats are not all in
    uint32_t w_beats = 0;           // W beats of the current burst so far
    uint64_t law = 0, lw = 0, lb = 0, lar = 0, lr = 0;  // AXI4-Lite handshakes so far

    void flag(uint64_t cycle, const char* fmt, ...) {
        count++;
        if (first.size() >= kKeptViolations) return;
        char msg[200];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        first.push_back("cycle " + std::to_string(cycle) + ": " + msg);
    }

    // VALID, once raised, stays high with the same payload until the READY handshake.
    void stable(uint64_t cycle, const Chan& was, const Chan& now, const char* name) {
        if (!was.valid || was.ready) return;
        if (!now.valid)
            flag(cycle, "%s VALID dropped before READY", name);
        else if (std::memcmp(was.f, now.f, sizeof was.f) != 0)
            flag(cycle, "%s payload changed while VALID waited for READY", name);
    }

    void burst(uint64_t cycle, const Chan& c, const char* name) {
        uint64_t addr = c.f[0];
        uint32_t beats = uint32_t(c.f[1]) + 1;
        if (beats > kMaxBurstBeats)
            flag(cycle, "%s AxLEN %u (%u beats) > 15 (AXI3 bursts are 1..16 beats)", name,
                 beats - 1, beats);
        if (c.f[2] != kSize8)
            flag(cycle, "%s AxSIZE %u, not 3 (8-byte beats)", name, unsigned(c.f[2]));
        if (c.f[3] != kBurstIncr) flag(cycle, "%s AxBURST %u, not INCR", name, unsigned(c.f[3]));
        if (addr % kBeatBytes)
            flag(cycle, "%s address 0x%llx not 8-byte aligned", name, (unsigned long long)addr);
        if (addr % kPageBytes + uint64_t(beats) * kBeatBytes > kPageBytes)
            flag(cycle, "%s burst of %u beats at 0x%llx crosses a 4 KB boundary", name, beats,
                 (unsigned long long)addr);
    }

    void wbeat(uint64_t cycle, const Chan& w) {
        bool last = w.f[2];
        if (w.f[1] == 0) flag(cycle, "W beat with WSTRB 0");
        if (aw_beats.empty()) {
            flag(cycle, "W beat with no AW burst left to match it (after a WLAST error)");
            return;
        }
        uint32_t n = aw_beats.front();
        w_beats++;
        if (last && w_beats < n)
            flag(cycle, "WLAST on beat %u of a %u-beat burst", w_beats, n);
        else if (!last && w_beats == n)
            flag(cycle, "no WLAST on the last beat of a %u-beat burst", n);
        if (last || w_beats == n) {
            aw_beats.pop_front();
            w_beats = 0;
        }
    }

    void step(uint64_t cycle, const Sample& s) {
        if (s.rst) {  // start over, keeping what was found
            prev = s;
            aw_beats.clear();
            w_beats = 0;
            law = lw = lb = lar = lr = 0;
            return;
        }
        if (!prev.rst) {
            stable(cycle, prev.ar, s.ar, "AR");
            stable(cycle, prev.aw, s.aw, "AW");
            stable(cycle, prev.w, s.w, "W");
            stable(cycle, prev.r, s.r, "R (DDR model)");
            stable(cycle, prev.b, s.b, "B (DDR model)");
            stable(cycle, prev.lb, s.lb, "AXI-Lite B");
            stable(cycle, prev.lr, s.lr, "AXI-Lite R");
        }
        if (s.ar.fire()) burst(cycle, s.ar, "AR");
        if (s.aw.fire()) {
            burst(cycle, s.aw, "AW");
            aw_beats.push_back(uint32_t(s.aw.f[1]) + 1);
        }
        if (s.w.fire()) wbeat(cycle, s.w);
        // A response may only follow the handshakes of its request (in earlier cycles).
        if (s.lb.valid && lb >= std::min(law, lw))
            flag(cycle, "AXI-Lite BVALID before both AW and W were accepted");
        if (s.lr.valid && lr >= lar) flag(cycle, "AXI-Lite RVALID with no read outstanding");
        law += s.law.fire();
        lw += s.lw.fire();
        lb += s.lb.fire();
        lar += s.lar.fire();
        lr += s.lr.fire();
        prev = s;
    }
};

struct Burst {
    uint64_t addr;
    uint32_t len;
    uint32_t done;
    uint64_t ready_at;
    bool err;
};

struct Sim {
    VerilatedContext ctx;
    Vrmsmp_top* top = nullptr;
    std::vector<uint8_t> mem;
    uint64_t base = 0;
    uint64_t cycle = 0;
    uint32_t latency = 0;
    bool stall = false;
    bool random = false;
    uint32_t min_latency = 0, max_latency = 0;
    double backpressure = 0;
    Rng rng;
    std::deque<Burst> rq, wq;
    std::deque<std::pair<uint64_t, bool>> bq;
    bool r_shown = false, b_shown = false;  // an R beat / B response is on the bus
    uint64_t ar_count = 0, aw_count = 0;   // bursts accepted so far
    std::vector<uint64_t> bad_reads, bad_writes;  // burst numbers to answer with SLVERR
    Checker check;
    Sample now;  // this cycle's sample (handshakes, AXI4-Lite response payloads)
};

bool in_range(const Sim* s, uint64_t addr, uint64_t n) {
    return addr >= s->base && addr + n <= s->base + s->mem.size();
}

// True (once) if burst number `n` was chosen for an injected error.
bool take(std::vector<uint64_t>& marks, uint64_t n) {
    for (auto it = marks.begin(); it != marks.end(); ++it)
        if (*it == n) {
            marks.erase(it);
            return true;
        }
    return false;
}

// Random mode: this cycle the model holds a READY low or does not start a VALID.
bool withhold(Sim* s) { return s->random && s->rng.chance(s->backpressure); }

uint64_t read_latency(Sim* s) {
    return s->random ? s->rng.between(s->min_latency, s->max_latency) : s->latency;
}

uint64_t write_latency(Sim* s) {
    return s->random ? s->rng.between(s->min_latency, s->max_latency) : s->latency / 2;
}

void drive_ddr(Sim* s) {
    Vrmsmp_top* t = s->top;
    if (!s->r_shown && !s->stall && !s->rq.empty() && s->rq.front().ready_at <= s->cycle &&
        !withhold(s)) {
        const Burst& b = s->rq.front();
        uint64_t a = b.addr + uint64_t(b.done) * kBeatBytes;
        uint64_t v = 0;
        if (!b.err) std::memcpy(&v, &s->mem[a - s->base], kBeatBytes);
        t->m_axi_rdata = v;
        t->m_axi_rlast = b.done + 1 == b.len;
        t->m_axi_rresp = b.err ? kSlvErr : kOkay;
        s->r_shown = true;
    }
    t->m_axi_rvalid = s->r_shown;
    t->m_axi_arready = !s->stall && s->rq.size() < kMaxQueued && !withhold(s);
    t->m_axi_awready = !s->stall && s->wq.size() < kMaxQueued && !withhold(s);
    t->m_axi_wready = !s->stall && !s->wq.empty() && !withhold(s);
    if (!s->b_shown && !s->stall && !s->bq.empty() && s->bq.front().first <= s->cycle &&
        !withhold(s)) {
        t->m_axi_bresp = s->bq.front().second ? kSlvErr : kOkay;
        s->b_shown = true;
    }
    t->m_axi_bvalid = s->b_shown;
}

void tick(Sim* s) {
    Vrmsmp_top* t = s->top;
    drive_ddr(s);
    t->clk = 0;
    t->eval();
    s->now = sample(t);
    const Sample& n = s->now;
    s->check.step(s->cycle, n);

    t->clk = 1;
    t->eval();
    s->cycle++;

    if (n.ar.fire()) {
        uint32_t len = uint32_t(n.ar.f[1]) + 1;
        bool err = !in_range(s, n.ar.f[0], uint64_t(len) * kBeatBytes);
        err |= take(s->bad_reads, s->ar_count++);
        s->rq.push_back({n.ar.f[0], len, 0, s->cycle + read_latency(s), err});
    }
    if (n.r.fire()) {
        s->r_shown = false;
        if (++s->rq.front().done == s->rq.front().len) s->rq.pop_front();
    }
    if (n.aw.fire()) {
        uint32_t len = uint32_t(n.aw.f[1]) + 1;
        bool err = !in_range(s, n.aw.f[0], uint64_t(len) * kBeatBytes);
        err |= take(s->bad_writes, s->aw_count++);
        s->wq.push_back({n.aw.f[0], len, 0, 0, err});
    }
    if (n.w.fire()) {
        Burst& wb = s->wq.front();
        if (!wb.err) {
            uint64_t a = wb.addr + uint64_t(wb.done) * kBeatBytes - s->base;
            for (unsigned i = 0; i < kBeatBytes; i++)
                if (n.w.f[1] >> i & 1) s->mem[a + i] = uint8_t(n.w.f[0] >> (8 * i));
        }
        if (++wb.done == wb.len) {
            s->bq.push_back({s->cycle + write_latency(s), wb.err});
            s->wq.pop_front();
        }
    }
    if (n.b.fire()) {
        s->b_shown = false;
        s->bq.pop_front();
    }
}

// Idle cycles before the driver raises an AXI4-Lite VALID.
uint32_t gap(Sim* s) { return s->random ? s->rng.between(0, kAxilMaxGap) : 0; }

// Raise `valid` once `allowed` and `wait` idle cycles have passed; it then stays up.
void raise(uint8_t& valid, bool allowed, uint32_t& wait) {
    if (valid || !allowed) return;
    if (wait)
        wait--;
    else
        valid = 1;
}

}  // namespace

extern "C" {

void* sim_new(uint64_t base, uint64_t size, uint32_t latency) {
    Sim* s = new Sim();
    s->top = new Vrmsmp_top(&s->ctx);
    s->mem.assign(size, 0);
    s->base = base;
    s->latency = latency;
    s->top->rst = 1;
    for (int i = 0; i < 4; i++) tick(s);
    s->top->rst = 0;
    tick(s);
    return s;
}

void sim_free(void* p) {
    Sim* s = static_cast<Sim*>(p);
    s->top->final();
    delete s->top;
    delete s;
}

int sim_mem_write(void* p, uint64_t off, const uint8_t* src, uint64_t n) {
    Sim* s = static_cast<Sim*>(p);
    if (off + n > s->mem.size()) return -1;
    std::memcpy(&s->mem[off], src, n);
    return 0;
}

int sim_mem_read(void* p, uint64_t off, uint8_t* dst, uint64_t n) {
    Sim* s = static_cast<Sim*>(p);
    if (off + n > s->mem.size()) return -1;
    std::memcpy(dst, &s->mem[off], n);
    return 0;
}

// AXI4-Lite write; `order` is 0 (AW and W together), kAwFirst (W raised after the AW
// handshake) or kWFirst (the other way round).
// Returns BRESP, or -1 if no response came.
int sim_axil_write(void* p, uint32_t addr, uint32_t value, uint32_t strb, int order) {
    Sim* s = static_cast<Sim*>(p);
    Vrmsmp_top* t = s->top;
    t->s_axil_awaddr = addr;
    t->s_axil_wdata = value;
    t->s_axil_wstrb = strb;
    bool aw_done = false, w_done = false;
    uint32_t aw_wait = gap(s), w_wait = gap(s);
    for (int i = 0; i < kAxilTimeout; i++) {
        if (!aw_done) raise(t->s_axil_awvalid, order != kWFirst || w_done, aw_wait);
        if (!w_done) raise(t->s_axil_wvalid, order != kAwFirst || aw_done, w_wait);
        t->s_axil_bready = !withhold(s);
        tick(s);
        if (s->now.law.fire()) {
            aw_done = true;
            t->s_axil_awvalid = 0;
        }
        if (s->now.lw.fire()) {
            w_done = true;
            t->s_axil_wvalid = 0;
        }
        if (s->now.lb.fire()) {
            t->s_axil_bready = 0;
            return int(s->now.lb.f[0]);
        }
    }
    return -1;
}

// AXI4-Lite read; returns RRESP << 32 | RDATA, or -1 if no response came.
int64_t sim_axil_read(void* p, uint32_t addr) {
    Sim* s = static_cast<Sim*>(p);
    Vrmsmp_top* t = s->top;
    t->s_axil_araddr = addr;
    bool ar_done = false;
    uint32_t ar_wait = gap(s);
    for (int i = 0; i < kAxilTimeout; i++) {
        if (!ar_done) raise(t->s_axil_arvalid, true, ar_wait);
        t->s_axil_rready = !withhold(s);
        tick(s);
        if (s->now.lar.fire()) {
            ar_done = true;
            t->s_axil_arvalid = 0;
        }
        if (s->now.lr.fire()) {
            t->s_axil_rready = 0;
            return int64_t(s->now.lr.f[1]) << 32 | int64_t(s->now.lr.f[0]);
        }
    }
    return -1;
}

int64_t sim_wait(void* p, uint64_t max_cycles) {
    Sim* s = static_cast<Sim*>(p);
    for (uint64_t i = 0; i < max_cycles; i++) {
        if (s->top->irq) return int64_t(i);
        tick(s);
    }
    return -1;
}

void sim_set_stall(void* p, int stall) { static_cast<Sim*>(p)->stall = stall != 0; }

// Random mode (random != 0) or back to the fixed latency given to sim_new. The caller checks
// min_latency <= max_latency and 0 <= backpressure < 1.
void sim_set_ddr_mode(void* p, int random, uint64_t seed, uint32_t min_latency,
                      uint32_t max_latency, double backpressure) {
    Sim* s = static_cast<Sim*>(p);
    s->random = random != 0;
    s->rng.state = seed;
    s->min_latency = min_latency;
    s->max_latency = max_latency;
    s->backpressure = backpressure;
}

// Answer SLVERR on the `nth` read (write != 0: write) burst accepted from now on (0 = the next).
void sim_inject_error(void* p, int write, uint64_t nth) {
    Sim* s = static_cast<Sim*>(p);
    if (write)
        s->bad_writes.push_back(s->aw_count + nth);
    else
        s->bad_reads.push_back(s->ar_count + nth);
}

// Number of protocol violations seen; the first few, one per line, go into `buf` (NUL-ended,
// cut to `size` bytes).
uint64_t sim_protocol_violations(void* p, char* buf, uint64_t size) {
    const Checker& c = static_cast<Sim*>(p)->check;
    std::string text;
    for (const std::string& v : c.first) text += v + "\n";
    if (size) std::snprintf(buf, size, "%s", text.c_str());
    return c.count;
}

uint64_t sim_cycles(void* p) { return static_cast<Sim*>(p)->cycle; }

}  // extern "C"
