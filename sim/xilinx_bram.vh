    // Behaviour of a 7-series block RAM for simulating Yosys synth_xilinx netlists, inserted by
    // rmsmp.sim.gatelevel into the RAMB18E1/RAMB36E1 declaration of Yosys' cells_sim.v (which
    // declares the ports and parameters only). The module gets ABITS (bit-address width: 14 or
    // 15), DW/PW (data and parity bits of one port: 16/2 or 32/4) and INIT_DATA/INIT_PARITY (the
    // INIT_xx/INITP_xx contents, concatenated) as localparams before this text.
    //
    // Modelled as UG473 describes, for what Yosys' brams_xc6v_map.v instantiates: TDP and SDP,
    // port widths 1, 2, 4, 9, 18, 36 (each port's read and write width on its own) and the SDP
    // port of twice that (72 or 36) spread over both ports' pins, byte write enables, WRITE_MODE
    // WRITE_FIRST / READ_FIRST / NO_CHANGE on a port's own writes, reads of the other port's
    // writes on the same edge returning the old data (what READ_FIRST promises; other modes leave
    // that collision undefined and Yosys does not rely on it), RSTRAM to SRVAL while enabled,
    // INIT_A/INIT_B and the initial contents, and the IS_*_INVERTED clock, enable and reset pins.
    // Output registers (DO*_REG), cascading and ECC are not modelled: gatelevel.py refuses a
    // netlist that uses them.
    localparam integer NBYTES = 1 << (ABITS - 3);
    localparam integer HALF = DW + DW / 8;  // the widest port; the SDP wide port is twice this
    localparam SDP = RAM_MODE == "SDP";
    localparam WIDE_READ = SDP && READ_WIDTH_A == 2 * HALF;
    localparam WIDE_WRITE = SDP && WRITE_WIDTH_B == 2 * HALF;

    reg [8:0] mem [0:NBYTES-1];  // {parity, data} per byte
    reg [DW-1:0] a_d, b_d;
    reg [PW-1:0] a_p, b_p;
    assign DOADO = a_d;
    assign DOPADOP = a_p;
    assign DOBDO = b_d;
    assign DOPBDOP = b_p;

    wire clk_a = CLKARDCLK ^ IS_CLKARDCLK_INVERTED;
    wire clk_b = CLKBWRCLK ^ IS_CLKBWRCLK_INVERTED;
    wire en_a = ENARDEN ^ IS_ENARDEN_INVERTED;
    wire en_b = ENBWREN ^ IS_ENBWREN_INVERTED;
    wire rst_a = RSTRAMARSTRAM ^ IS_RSTRAMARSTRAM_INVERTED;
    wire rst_b = RSTRAMB ^ IS_RSTRAMB_INVERTED;
    wire [ABITS-1:0] addr_a = ADDRARDADDR[ABITS-1:0];
    wire [ABITS-1:0] addr_b = ADDRBWRADDR[ABITS-1:0];

    // First byte and byte count of the width-w word at bit address addr (widths below 9 touch
    // part of one byte, data bits only).
    function integer first_byte(input integer w, input integer addr);
        first_byte = w < 9 ? (addr >> 3) : ((addr >> 3) & ~(w / 9 - 1));
    endfunction

    // Byte i of the memory after a width-ww write at waddr of data wd, parity wp, enables we.
    function [8:0] written(
        input integer i, input [8:0] old, input integer ww, input integer waddr,
        input [DW-1:0] wd, input [PW-1:0] wp, input [PW-1:0] we
    );
        integer k, b, j;
        begin
            written = old;
            if (ww > 0 && ww < 9) begin
                b = waddr & ~(ww - 1);
                for (k = 0; k < ww; k = k + 1)
                    if (we[0] && (b + k) >> 3 == i) written[(b + k) & 7] = wd[k];
            end else if (ww >= 9) begin
                j = i - first_byte(ww, waddr);
                if (j >= 0 && j < ww / 9 && we[j]) written = {wp[j], wd[8 * j +: 8]};
            end
        end
    endfunction

    // The width-w word at bit address addr as {parity, data} (parity above DW), seen after a
    // write of the same port when wr is set (WRITE_FIRST), else before it.
    function [DW+PW-1:0] word(
        input integer w, input integer addr, input wr, input integer ww, input integer waddr,
        input [DW-1:0] wd, input [PW-1:0] wp, input [PW-1:0] we
    );
        integer k, b, i;
        reg [8:0] byte_;
        begin
            word = 0;
            if (w < 9) begin
                b = addr & ~(w - 1);
                for (k = 0; k < w; k = k + 1) begin
                    i = (b + k) >> 3;
                    byte_ = wr ? written(i, mem[i], ww, waddr, wd, wp, we) : mem[i];
                    word[k] = byte_[(b + k) & 7];
                end
            end else begin
                for (k = 0; k < w / 9; k = k + 1) begin
                    i = first_byte(w, addr) + k;
                    byte_ = wr ? written(i, mem[i], ww, waddr, wd, wp, we) : mem[i];
                    word[8 * k +: 8] = byte_[7:0];
                    word[DW + k] = byte_[8];
                end
            end
        end
    endfunction

    // INIT_A/INIT_B/SRVAL_* of a width-w port ({parity, data} packed, as Yosys' ival writes
    // them) as {parity, data} with the parity above DW.
    function [DW+PW-1:0] value(input integer w, input [HALF-1:0] v);
        integer k;
        begin
            value = 0;
            if (w < 9) value[DW-1:0] = v[DW-1:0];
            else
                for (k = 0; k < w / 9; k = k + 1) begin
                    value[8 * k +: 8] = v[8 * k +: 8];
                    value[DW + k] = v[8 * (w / 9) + k];
                end
        end
    endfunction

    localparam integer RW_A = WIDE_READ ? HALF : READ_WIDTH_A;
    localparam integer RW_B = WIDE_READ ? HALF : READ_WIDTH_B;
    localparam integer WW_A = WIDE_WRITE ? HALF : WRITE_WIDTH_A;
    localparam integer WW_B = WIDE_WRITE ? HALF : WRITE_WIDTH_B;

    integer n;
    initial begin
        for (n = 0; n < NBYTES; n = n + 1) mem[n] = {INIT_PARITY[n], INIT_DATA[8 * n +: 8]};
        {a_p, a_d} = value(RW_A, INIT_A[HALF-1:0]);
        {b_p, b_d} = value(RW_B, INIT_B[HALF-1:0]);
    end

    // A wide SDP access is two half-width accesses: the low half on port A's pins, the high half
    // (the next HALF bits, DW bits of address further) on port B's.
    wire [ABITS-1:0] wide_read = addr_a & ~(2 * DW - 1);
    wire [ABITS-1:0] wide_write = addr_b & ~(2 * DW - 1);
    wire [ABITS-1:0] rd_addr_a = WIDE_READ ? wide_read : addr_a;
    wire [ABITS-1:0] rd_addr_b = WIDE_READ ? wide_read + DW : addr_b;
    wire [ABITS-1:0] wr_addr_a = WIDE_WRITE ? wide_write : addr_a;
    wire [ABITS-1:0] wr_addr_b = WIDE_WRITE ? wide_write + DW : addr_b;
    wire [PW-1:0] we_a = WIDE_WRITE ? WEBWE[PW-1:0] : WEA[PW-1:0];
    wire [PW-1:0] we_b = WIDE_WRITE ? WEBWE[2*PW-1:PW] : WEBWE[PW-1:0];
    wire wclk_a = WIDE_WRITE ? clk_b : clk_a;
    wire wen_a = WIDE_WRITE ? en_b : en_a;
    wire rclk_b = WIDE_READ ? clk_a : clk_b;
    wire ren_b = WIDE_READ ? en_a : en_b;
    wire rrst_b = WIDE_READ ? rst_a : rst_b;
    wire writes_a = wen_a && WW_A > 0 && |we_a;
    wire writes_b = en_b && WW_B > 0 && |we_b;

    // Writes land with nonblocking assignments, so a read on the same edge sees the old data
    // whichever port's block runs first.
    localparam integer SPAN_A = WW_A < 9 ? 1 : WW_A / 9;  // bytes one write touches
    localparam integer SPAN_B = WW_B < 9 ? 1 : WW_B / 9;
    integer ka, kb;
    always @(posedge wclk_a)
        if (writes_a)
            for (ka = first_byte(WW_A, wr_addr_a); ka < first_byte(WW_A, wr_addr_a) + SPAN_A; ka = ka + 1)
                mem[ka] <= written(ka, mem[ka], WW_A, wr_addr_a, DIADI, DIPADIP, we_a);
    always @(posedge clk_b)
        if (writes_b)
            for (kb = first_byte(WW_B, wr_addr_b); kb < first_byte(WW_B, wr_addr_b) + SPAN_B; kb = kb + 1)
                mem[kb] <= written(kb, mem[kb], WW_B, wr_addr_b, DIBDI, DIPBDIP, we_b);

    always @(posedge clk_a)
        if (en_a && RW_A > 0) begin
            if (rst_a) {a_p, a_d} <= value(RW_A, SRVAL_A[HALF-1:0]);
            else if (!(writes_a && !WIDE_WRITE && WRITE_MODE_A == "NO_CHANGE"))
                {a_p, a_d} <= word(RW_A, rd_addr_a, writes_a && !WIDE_WRITE && WRITE_MODE_A == "WRITE_FIRST",
                                   WW_A, wr_addr_a, DIADI, DIPADIP, we_a);
        end
    always @(posedge rclk_b)
        if (ren_b && RW_B > 0) begin
            if (rrst_b) {b_p, b_d} <= value(RW_B, SRVAL_B[HALF-1:0]);
            else if (!(writes_b && !WIDE_READ && WRITE_MODE_B == "NO_CHANGE"))
                {b_p, b_d} <= word(RW_B, rd_addr_b, writes_b && !WIDE_READ && WRITE_MODE_B == "WRITE_FIRST",
                                   WW_B, wr_addr_b, DIBDI, DIPBDIP, we_b);
        end
