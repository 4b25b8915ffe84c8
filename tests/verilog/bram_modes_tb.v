// Drives bram_modes (RTL) and bram_modes_gates (its netlist) with the same random stimulus and
// counts, per output, the cycles on which they differ. Addresses keep a few low and high bits
// so reads often hit written words; the TDP ports never write or read the same word at once
// (a collision the primitive leaves undefined).
module bram_modes_tb;
    parameter integer CYCLES = 4000;
    reg clk = 0;
    reg [8:0] a72, b72; reg we72; reg [71:0] d72;
    reg [9:0] a36, b36; reg [3:0] be36; reg [35:0] d36;
    reg [9:0] ta, tb; reg wea, web; reg [17:0] da, db;
    reg [12:0] an; reg wen; reg [3:0] dn;
    reg [9:0] ar; reg wer, rst, en; reg [8:0] dr;
    wire [71:0] q72 [0:1]; wire [35:0] q36 [0:1]; wire [17:0] qa [0:1], qb [0:1];
    wire [3:0] qn [0:1]; wire [8:0] qr [0:1];

    bram_modes rtl (
        .clk(clk), .a72(a72), .b72(b72), .we72(we72), .d72(d72), .q72(q72[0]),
        .a36(a36), .b36(b36), .be36(be36), .d36(d36), .q36(q36[0]),
        .ta(ta), .tb(tb), .wea(wea), .web(web), .da(da), .db(db), .qa(qa[0]), .qb(qb[0]),
        .an(an), .wen(wen), .dn(dn), .qn(qn[0]),
        .ar(ar), .wer(wer), .rst(rst), .en(en), .dr(dr), .qr(qr[0])
    );
    bram_modes_gates gates (
        .clk(clk), .a72(a72), .b72(b72), .we72(we72), .d72(d72), .q72(q72[1]),
        .a36(a36), .b36(b36), .be36(be36), .d36(d36), .q36(q36[1]),
        .ta(ta), .tb(tb), .wea(wea), .web(web), .da(da), .db(db), .qa(qa[1]), .qb(qb[1]),
        .an(an), .wen(wen), .dn(dn), .qn(qn[1]),
        .ar(ar), .wer(wer), .rst(rst), .en(en), .dr(dr), .qr(qr[1])
    );

    function [15:0] addr(input integer bits);  // 3 random low bits, the top bit random
        addr = ($random & 7) | (($random & 1) << (bits - 1));
    endfunction

    integer cycle;
    integer bad72 = 0, bad36 = 0, bada = 0, badb = 0, badn = 0, badr = 0;
    initial begin
        for (cycle = 0; cycle < CYCLES; cycle = cycle + 1) begin
            a72 = addr(9); b72 = addr(9); we72 = $random; d72 = {$random, $random, $random};
            a36 = addr(10); b36 = addr(10); be36 = $random; d36 = {$random, $random};
            ta = addr(10); tb = addr(10); wea = $random; web = $random; da = $random; db = $random;
            if (tb == ta) tb = ta ^ 1;
            an = addr(13); wen = $random; dn = $random;
            ar = addr(10); wer = $random; rst = ($random & 7) == 0; en = ($random & 3) != 0;
            dr = $random;
            #1 clk = 1;
            #1 clk = 0;
            if (q72[0] !== q72[1]) bad72 = bad72 + 1;
            if (q36[0] !== q36[1]) bad36 = bad36 + 1;
            if (qa[0] !== qa[1]) bada = bada + 1;
            if (qb[0] !== qb[1]) badb = badb + 1;
            if (qn[0] !== qn[1]) badn = badn + 1;
            if (qr[0] !== qr[1]) badr = badr + 1;
        end
        $display("MISMATCHES q72=%0d q36=%0d qa=%0d qb=%0d qn=%0d qr=%0d",
                 bad72, bad36, bada, badb, badn, badr);
        $finish;
    end
endmodule
