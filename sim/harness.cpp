// C++ harness around the Verilated rmsmp_top: a DDR model behind the AXI4 master, an AXI4-Lite
// driver for the registers, and a run loop. Called from Python through ctypes (rmsmp.sim.verilator).
#include <cstdint>
#include <cstring>
#include <deque>
#include <vector>

#include "Vrmsmp_top.h"
#include "verilated.h"

namespace {

constexpr unsigned kBeatBytes = 8;
constexpr unsigned kMaxQueued = 8;
constexpr int kAxilTimeout = 1000;
constexpr uint8_t kOkay = 0, kSlvErr = 2;

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
    std::deque<Burst> rq, wq;
    std::deque<std::pair<uint64_t, bool>> bq;
    bool awh = false, wh = false, bh = false, arh = false, rh = false;
};

bool in_range(const Sim* s, uint64_t addr, uint64_t n) {
    return addr >= s->base && addr + n <= s->base + s->mem.size();
}

void tick(Sim* s) {
    Vrmsmp_top* t = s->top;
    bool rvalid = !s->stall && !s->rq.empty() && s->rq.front().ready_at <= s->cycle;
    if (rvalid) {
        const Burst& b = s->rq.front();
        uint64_t a = b.addr + uint64_t(b.done) * kBeatBytes;
        uint64_t v = 0;
        if (!b.err) std::memcpy(&v, &s->mem[a - s->base], kBeatBytes);
        t->m_axi_rdata = v;
        t->m_axi_rlast = b.done + 1 == b.len;
        t->m_axi_rresp = b.err ? kSlvErr : kOkay;
    }
    t->m_axi_rvalid = rvalid;
    t->m_axi_arready = !s->stall && s->rq.size() < kMaxQueued;
    t->m_axi_awready = !s->stall && s->wq.size() < kMaxQueued;
    t->m_axi_wready = !s->stall && !s->wq.empty();
    bool bvalid = !s->stall && !s->bq.empty() && s->bq.front().first <= s->cycle;
    t->m_axi_bvalid = bvalid;
    t->m_axi_bresp = bvalid && s->bq.front().second ? kSlvErr : kOkay;

    t->clk = 0;
    t->eval();
    bool ar = t->m_axi_arvalid && t->m_axi_arready;
    uint64_t araddr = t->m_axi_araddr;
    uint32_t arlen = t->m_axi_arlen + 1u;
    bool r = rvalid && t->m_axi_rready;
    bool aw = t->m_axi_awvalid && t->m_axi_awready;
    uint64_t awaddr = t->m_axi_awaddr;
    uint32_t awlen = t->m_axi_awlen + 1u;
    bool w = t->m_axi_wvalid && t->m_axi_wready;
    uint64_t wdata = t->m_axi_wdata;
    uint8_t wstrb = t->m_axi_wstrb;
    bool b = bvalid && t->m_axi_bready;
    s->awh = t->s_axil_awvalid && t->s_axil_awready;
    s->wh = t->s_axil_wvalid && t->s_axil_wready;
    s->bh = t->s_axil_bvalid && t->s_axil_bready;
    s->arh = t->s_axil_arvalid && t->s_axil_arready;
    s->rh = t->s_axil_rvalid && t->s_axil_rready;

    t->clk = 1;
    t->eval();
    s->cycle++;

    if (ar) {
        bool err = !in_range(s, araddr, uint64_t(arlen) * kBeatBytes);
        s->rq.push_back({araddr, arlen, 0, s->cycle + s->latency, err});
    }
    if (r && ++s->rq.front().done == s->rq.front().len) s->rq.pop_front();
    if (aw) {
        bool err = !in_range(s, awaddr, uint64_t(awlen) * kBeatBytes);
        s->wq.push_back({awaddr, awlen, 0, 0, err});
    }
    if (w) {
        Burst& wb = s->wq.front();
        if (!wb.err) {
            uint64_t a = wb.addr + uint64_t(wb.done) * kBeatBytes - s->base;
            for (unsigned i = 0; i < kBeatBytes; i++)
                if (wstrb >> i & 1) s->mem[a + i] = uint8_t(wdata >> (8 * i));
        }
        if (++wb.done == wb.len) {
            s->bq.push_back({s->cycle + s->latency / 2, wb.err});
            s->wq.pop_front();
        }
    }
    if (b) s->bq.pop_front();
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

int sim_reg_write(void* p, uint32_t addr, uint32_t value) {
    Sim* s = static_cast<Sim*>(p);
    Vrmsmp_top* t = s->top;
    t->s_axil_awaddr = addr;
    t->s_axil_wdata = value;
    t->s_axil_wstrb = 0xF;
    t->s_axil_awvalid = 1;
    t->s_axil_wvalid = 1;
    t->s_axil_bready = 1;
    bool aw_done = false, w_done = false;
    for (int i = 0; i < kAxilTimeout; i++) {
        tick(s);
        aw_done |= s->awh;
        w_done |= s->wh;
        if (aw_done) t->s_axil_awvalid = 0;
        if (w_done) t->s_axil_wvalid = 0;
        if (s->bh) {
            t->s_axil_bready = 0;
            return 0;
        }
    }
    return -1;
}

int64_t sim_reg_read(void* p, uint32_t addr) {
    Sim* s = static_cast<Sim*>(p);
    Vrmsmp_top* t = s->top;
    t->s_axil_araddr = addr;
    t->s_axil_arvalid = 1;
    t->s_axil_rready = 1;
    for (int i = 0; i < kAxilTimeout; i++) {
        t->clk = 0;
        t->eval();
        uint32_t data = t->s_axil_rdata;
        bool valid = t->s_axil_rvalid;
        tick(s);
        if (s->arh) t->s_axil_arvalid = 0;
        if (s->rh && valid) {
            t->s_axil_rready = 0;
            return data;
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

uint64_t sim_cycles(void* p) { return static_cast<Sim*>(p)->cycle; }

}  // extern "C"
