// Block RAMs in the modes Yosys' synth_xilinx maps to RAMB18E1/RAMB36E1, each with its own ports,
// for tests/test_gatelevel.py: the RTL and its netlist (block RAMs simulated by
// sim/xilinx_bram.vh) must answer alike to the same random stimulus.
module bram_modes (
    input clk,
    input [8:0] a72, input [8:0] b72, input we72, input [71:0] d72,  // SDP 72 bits, read first
    output reg [71:0] q72,
    input [9:0] a36, input [9:0] b36, input [3:0] be36, input [35:0] d36,  // SDP 36, byte enables
    output reg [35:0] q36,
    input [9:0] ta, input [9:0] tb, input wea, input web, input [17:0] da, input [17:0] db,
    output reg [17:0] qa, output reg [17:0] qb,  // TDP 18: A write first, B read first
    input [12:0] an, input wen, input [3:0] dn, output reg [3:0] qn,  // 4 bits, no change
    input [9:0] ar, input wer, input rst, input en, input [8:0] dr,  // reset, enable, init
    output reg [8:0] qr
);
    reg [71:0] m72 [0:511];
    always @(posedge clk) begin
        if (we72) m72[a72] <= d72;
        q72 <= m72[b72];
    end

    reg [35:0] m36 [0:1023];
    integer k;
    always @(posedge clk) begin
        for (k = 0; k < 4; k = k + 1)
            if (be36[k]) m36[a36][9 * k +: 9] <= d36[9 * k +: 9];
        q36 <= m36[b36];
    end

    reg [17:0] mt [0:1023];
    always @(posedge clk) begin
        if (wea) begin
            mt[ta] <= da;
            qa <= da;
        end else qa <= mt[ta];
    end
    always @(posedge clk) begin
        if (web) mt[tb] <= db;
        qb <= mt[tb];
    end

    reg [3:0] mn [0:8191];
    always @(posedge clk) begin
        if (wen) mn[an] <= dn;
        else qn <= mn[an];
    end

    reg [8:0] mr [0:1023];
    initial begin
        qr = 9'h15a;
        mr[0] = 9'h101;
        mr[1] = 9'h0f3;
        mr[1023] = 9'h1c7;
    end
    always @(posedge clk)
        if (en) begin
            if (wer) mr[ar] <= dr;
            if (rst) qr <= 9'h0a5;
            else qr <= mr[ar];
        end
endmodule
