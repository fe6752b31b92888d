"""2-D convolution on the CPU with Numba: direct (register-tiled) and im2col + GEMM.

Shapes: x, dx (N, C, H, W); w, dw (K, Cg, R, S) with Cg = C/G, Kg = K/G for G
groups; y, g (N, K, OH, OW); P = OH*OW output pixels; Q = Cg*R*S is the
reduction length of one output (the rows of the im2col matrix). Three ops:
forward (y), backward-data (dx) and backward-weights (dw, db). Backward-data is
itself a stride-1 convolution: of the gradient, zero-stuffed between pixels for
stride > 1 and padded, with the weights flipped and transposed; so every
forward version below also serves backward-data.

VERSIONS, the one table (name: the ops it serves); choose() picks one per op
and says why. Read top to bottom; each later version exists for a measured
reason (2 threads of the AVX-512 development machine, float32; "a -> b ms" is
the same op before / after, both timed in one process taking turns). The machine
was shared and loaded while these were taken: read the ratios, not the times.

    tile    (forward, backward-data, backward-weights; any stride, dilation, groups)
            direct as an implicit GEMM: y[k, p] = sum_q w[k, q] * X[q, p] where X,
            the im2col matrix, is never built: X[q, p] = xpad[crs_off[q] + pix_off[p]],
            two offset tables into one sample's zero-padded input, which each task
            builds in its own buffer (it stays in L2). The register tile is TK output
            channels x 6 pixels (TK = 2 vectors: 32 with AVX-512), accumulators on the
            stack; per q step 6 broadcasts, 2 vector loads, 12 FMAs. Backward-weights
            is the same tile with the roles swapped (TK output channels x 6 rows q,
            reduced over pixels), reading each sample's gradient transposed so the
            channels are contiguous.
    im2col  (all three ops; the rule's for few output pixels, see IM2COL_MAX_PIXELS)
            the textbook version: a convolution as one GEMM per batch of
            samples and group over the column matrix col (Q, nb*P), whose column m holds
            the receptive field of output pixel m (nb samples side by side). The batch is
            placed in a zero-padded buffer xz (the Grid of the direct versions), so
            col[q, m] = xz[tap[q] + pix[m]]: two offset tables (tap q = (c, r, s), pixel
            m = (sample, oh, ow)). col is never written: the GEMM takes it as a Gathered
            operand (kernels/gemm/cpu.py), whose micro-kernel reads col's strips where
            they lie in xz through the two tables (tile_gathered; no packing). Forward: out (nb*P, Kg) = col^T @ w^T + b (bias in the GEMM's
            epilogue), moved into y by register transposes (transpose_into).
            Backward-data: the same on the gradient zero-stuffed and padded
            (backward_data_grid) with the flipped, transposed weights, as the direct
            versions do it (no col2im). Backward-weights: dw^T (Q, Kg) += col @ g^T,
            pixels as the reduction, g read in place (a Gathered operand too), one row
            block of dw^T per thread.
            History on N128 C32 28x28 K64 3x3 fwd+bwd: sample by sample with divisions
            340 ms; batched, division-free 160 ms (direct then 47 ms, 0.3x); col2im
            plane by plane (one pass 741 -> 8 ms) and the GEMMs with the pixels (or Q)
            as their rows, so the GEMM's threads stopped streaming col from L3 once per
            8-row block of w (80 -> 20 and 38 -> 25 ms per pass): 0.46-0.52x direct
            (quiet bench runs). That version wrote col (8 MB per batch) at memory speed
            and the GEMM packed it again. Per pass, ms, against direct (the entry points
            below, one process, versions taking turns, medians of 7):
            forward 31.5 vs 13.4 (im2col 8.0, GEMM 13.6, transposes 4.9), backward-data
            20.4 vs 14.3 (moving g 1.4, GEMM 13.9, col2im 4.3), backward-weights 26.6 vs
            14.4 (im2col 8.0, moving g 1.4, GEMM 15.4): 0.54x. Then, step by step:
            col as a Gathered operand of the GEMM: forward 31.5 -> 18.6, backward-weights
            26.6 -> 18.7 (0.65x); register transposes into y and the bias in the
            epilogue: forward -> 17.2 (transposes 5.3 -> 1.9 ms); backward-data as the
            convolution of the gradient, strips across a row's end by masked loads (its
            GEMM 30.7 -> 27.1 ms on one thread); backward-weights with one row block per
            thread (19.3 -> 16.7 ms). Result, per pass: forward 16.7 vs 13.7, backward-data
            18.8 vs 15.5, backward-weights 20.3 vs 14.9 ms (0.79x direct); the bench's
            fwd+bwd rows in two quiet runs: 56.0 vs 42.8 and 53.3 vs 38.5 ms, 0.72-0.77x
            direct (0.46-0.52x before), 0.59-0.63x torch[channels_last]. Then the auto
            path became Winograd (wg, wg4) and cl, and im2col fell to 0.54-0.63x of it:
            its GEMM ran these shapes at 205-257 GFLOP/s (29008 x 64 x 288 forward,
            14112 x 32 x 576 backward-data), because every packed strip of col fed only
            one or two tiles (Kg = 64 or 32 columns). So col is no longer packed: the
            micro-kernel reads it where it lies (tile_gathered: the MR row addresses
            formed once per tile, one column offset loaded per step of K; a ragged last
            strip reads its first row again for the rows it lacks). Per pass, ms, medians of 5 turns in one process (packed ->
            in place, direct beside): forward 17.2 -> 14.8 (10.3), backward-data 20.6
            -> 16.1 (11.2), backward-weights 21.2 -> 17.2 (14.6); fwd+bwd 59.0 -> 48.2
            against direct's 36.0 (0.61 -> 0.75x). What is left: placing the batch (a pass over x or g) and the
            transposes into y and dx, each at about memory speed.
    cl      (backward-weights) x copied per sample into a zero-padded channels-last
            buffer in blocks of TK channels (the blocked layout), the gradient read in
            place: KW = 8 output channels x TK input channels of one tap, reduced over
            the pixels; per pixel 8 broadcasts from g, 2 vector loads, 16 FMAs. 16.6 vs
            21.0 ms against tile (1.27x), the transposes of g gone. Then: the partial dw
            laid out (K, taps, Cg), so a tile adds whole vectors (it added one scalar per
            element at stride R*S), reordered into dw once per call; x placed LANES
            channels x LANES pixels at a time by transpose_block (it gathered one element
            at a time at stride H*W). N128 C32 28x28 K64, one process, order rotated each
            round, three runs: 16.02 -> 13.87, 14.12 -> 13.41, 15.29 -> 14.41 ms (1.05-1.16x;
            against torch[channels_last] 0.91-1.04x -> 1.01-1.09x); N32 C64 56x56 K64
            29.88 -> 28.99 ms (1.03x); N1 C64 56x56 0.98 -> 0.97 ms. The bench's C32
            fwd+bwd row after it, three quiet runs: 0.92, 0.96, 0.97x torch[channels_last]
            (0.90-1.02x before, in five runs). Then: where a (sample, band)'s g is finite
            (the sum of its rows, computed for db anyway, is), a tap skips the output rows
            whose input row is padding (0 * g adds nothing; with an inf in g they run, as
            0 * inf is NaN in the direct sum): N128 C32 1.02x and 1.03x in two runs
            (14.25 -> 13.97, 14.48 -> 14.07 ms; 2.4% of the products are skipped), C64
            26.11 -> 26.11 ms, N1 C64 0.82 -> 0.82 ms. Skipping the padding columns too
            needs the tile to walk rows and columns (about as many products again); not done.
            Then, for 3-wide kernels: a tile of KW3 = 4 output channels x TK input
            channels x a kernel row's three taps (24 accumulators), so one broadcast of
            g serves three taps: per pixel 4 broadcasts, 6 vector loads, 24 FMAs (10
            loads per 24 FMAs instead of per 16), and a third of the pix_off loads and
            tile calls. The sums are bitwise those of the one-tap tile (same order).
            Against the one-tap tile, one process, order rotated (/tmp/conv6/abcl.py),
            2 threads: N128 C32 28x28 K64 1.04x, 1.08x, 1.09x in three runs (15.82 ->
            15.19, 13.85 -> 12.78, 13.47 -> 12.33 ms; 1.01-1.05x -> 1.07-1.15x
            torch[channels_last]), N32 C64 56x56 1.05x, 1.08x (29.45 -> 28.10, 29.57 ->
            27.30 ms), N1 C64 56x56 1.12x, 1.03x (1.10 -> 0.98, 1.08 -> 1.04 ms); one
            thread, N128 C32: 1.03x, 1.05x, 1.04x. The bench's C32 fwd+bwd row after it,
            three quiet runs: 1.07, 1.07, 1.15x torch[channels_last] (0.97-1.05x before).
    px      (forward, backward-data; stride 1) vectorised over pixels: output pixel
            (oh, ow) is numbered p = oh*Wz + ow on the padded input's grid, so a tap
            reads neighbouring pixels as contiguous vector loads, even across row ends
            (the Wz - OW pixels per row that do not exist are computed and dropped).
            Tile: kx output channels x 256/kx pixels (16 zmm accumulators), results
            leave as whole vectors into a per-task buffer whose finished rows are
            copied to y with the bias while the next tiles compute. kx = 8 for most
            layers (forward 15.4-16.5 vs 19.5-20.5 ms, backward-data 17-18 vs 21 ms
            against tile, whose stores went out one scalar at a time); kx = 4 and
            kx = 1 for layers with few output channels, where kx = 8 lanes were mostly
            empty: backward-data of LeNet's conv1 (C = 1) 1.32 -> 0.67 ms (1.9-2.0x),
            depthwise N128 C64 28x28 3x3 forward and backward-data 1.5x (then 1.7x
            with a sample's groups in one task: see the work split below).
    pxw     (backward-weights; stride 1) vectorised over pixels like px, for few input
            channels per group (LeNet's first layer, depthwise): tile and cl fill only
            Cg or Kg of their TK lanes; here a lane is a pixel, the tile kb output
            channels x qb rows q (kb, qb = 4, 4, or 1, 9 for one channel per group),
            per LANES pixels kb gradient loads, qb input loads, kb*qb FMAs. A chunk of
            samples that fits L1 is placed on the padded grid (x, and g with zeros where
            no pixel exists), and the sums stay vectors in a per-thread buffer until
            the thread's last sample (a horizontal sum per tile and sample cost as
            much as the loop). Lanes past a row's end read the neighbouring pixel times
            a zero gradient; a chunk whose x holds NaN or inf takes an exact scalar
            loop instead, so NaN and inf reach exactly the entries PyTorch's do.
            LeNet conv1 backward-weights 2.00 -> 0.93 ms (2.1-2.4x), depthwise
            186 -> 19 ms (10-12x). Not for LeNet's conv2 (Cg = 6, 10x10 outputs):
            0.74-0.76x tile there (FEW_CHANNELS).
    sv      (all three ops; stride 1) the samples are the vector lanes: a block of LANES
            samples is interleaved into (C, Hz, Wz, LANES), a register transpose per LANES
            pixels (_cpu.transpose_block; as a loop it took 0.15 of a 0.36 ms LeNet layer),
            so any channel count, row width or group count fills every lane. Forward and
            backward-data: KX output channels x TP pixels of one row (4x5, 3x7 or 6x4, the
            one wasting the fewest lanes), per tap TP vector loads, KX broadcasts, KX*TP
            FMAs, kernel rows that only reach padding skipped; backward-weights: KB output
            channels x QB rows q (4x5 or 3x5), per pixel KB + QB loads and KB*QB FMAs, the
            sums vectors until the piece ends. Chosen for stride 1, N >= LANES and a sample
            block's input or output within SV_BYTES (L2). Per op against the versions
            before it (forward, backward-data, backward-weights, ms; one process taking
            turns, load 1.7): LeNet conv2 0.41 -> 0.25, 0.85 -> 0.32, 0.70 (tile) -> 0.27;
            LeNet conv1 0.25 -> 0.15, 0.49 -> 0.42, 0.59 (pxw) -> 0.21; depthwise N128 C64
            28x28 G64 4.1 -> 3.5, 4.2 -> 3.6, 8.4 (pxw) -> 3.7. Not for big layers, whose
            sample blocks leave L2: N128 C32 28x28 K64 0.82x, 0.63x, 0.88x px / px / cl.
            The N >= LANES rule: LeNet conv2 fwd+bwd at N = 16 0.33 -> 0.21 ms, at N = 8
            (half the lanes empty) 0.50 -> 0.52 ms.
            Cold compile (CPU s, empty cache; bench/compile_time.py --main-job lists each
            kernel): one parallel kernel per op held every tile shape behind a runtime
            switch, and Numba optimises and compiles a prange body's callees again at each
            of its four levels: forward 3.5-3.6 s, backward-weights 3.3-3.4 s. Now each
            tile shape is its own piece function (_make_sv_piece, _make_svw_piece: the
            shape's constants closed over, the other shapes' branches pruned), compiled
            when a layer first picks it and run by _cpu.run_pieces through its address.
            The main job's two: one piece per op under run_pieces 2.0 + 1.5 s, one per
            shape 1.55 + 1.1 s (it uses one shape of each); a network that uses two
            forward shapes (LeNet) pays about 0.75 s for the second piece. The
            tiles take their shape as closure constants, not literally() (whose
            dispatch typed each tile twice: 3.04 -> 2.82 s for forward's three).

    wg      (forward, backward-data; 3x3, stride 1, dilation 1, groups 1) Winograd F(2x2,
            3x3) (Lavin & Gray 2016): a 2x2 output tile is A^T [(G g G^T) . (B^T d B)] A
            from its 4x4 input patch d, 16 products per channel pair instead of 36 (2.25x
            fewer; the column of tiles past a row's end and a block's last lanes are
            computed and dropped: 196 of 224 lanes on a 28x28 output). Fused per block of
            2*LANES tiles of a band of tile rows so nothing leaves L2: the input as four
            planes (even and odd rows x even and odd columns, so a patch is contiguous in
            the tile index), V = B^T d B for the block (16 x Cq x 32), the 16 products as an
            8-channel x 32-tile register tile over Cq (M), the inverse transform into the
            task's buffer, its rows interleaved into y with the bias at the task's end. A
            sample whose input holds NaN or inf goes to px (the transforms add neighbours,
            so inf - inf would make NaN where the direct sum keeps inf). Chosen where both
            channel counts (reduced and output) are >= WG_MIN_CHANNELS (32; measured at
            16-64 channels, see the constant). Per op against px (ms, one process taking
            turns, 2 threads, quiet machine): N128 C32 28x28 K64 forward 14.8 -> 10.9,
            backward-data 16.5 -> 11.9 (1.36x, 1.39x); N32 C64 56x56 K64 forward 31.1 ->
            20.4, backward-data 30.8 -> 20.4 (1.52x, 1.51x); two earlier runs on C32
            1.23-1.30x. Against torch[channels_last] in the same run: C32 forward 1.07x (px
            0.78x), backward-data 1.02x (px 0.73x); C64 1.49x (px 0.98x) and 1.19x (px
            0.79x). Fwd+bwd in the bench (cl's backward-weights in both), four quiet runs:
            C32 0.90-1.02x torch[channels_last] (px 0.75-0.81x), C64 1.08-1.33x (px
            0.85-0.94x). Float32 error against the float64 reference: 1.4-3.7e-7 of the
            largest output (px about 7e-7 on C32). How it got there (forward, N128 C32
            28x28, against px in the same process): the first fused version 0.52x
            (transforms as loops whose signed indices made LLVM gather, and through heap
            buffers it could not prove unaliased: the input transform 3.1 -> 26 ms with
            unsigned indices but no stack buffer, then about 1 ms, by difference, with
            both); V's tap rows WG_VPAD longer than 4 KB apart (input transform 3.2 -> 2.1
            us per block); the placing's edge tests taken out of the row loop (3.4 -> 1.5
            ms); the taps as the outer loop of the products, so a tap's V stays in L1 across
            the channel blocks (1.55x -> 1.75x px, busy machine); a NaN/inf check by the sum
            of the placed values rather than 0 * each (one thread 0.94x -> 1.0x of the
            version without a check); four planes instead of eight (see _wg_place).
    wg4     (forward, backward-data; as wg) Winograd F(4x4, 3x3): a 4x4 output tile from its
            6x6 input patch, 36 products per channel pair instead of 144 (4x fewer than the
            direct sum, 1.78x fewer than wg). wg's blocks, products (_wg_gemm, 36 taps) and
            work split; sixteen planes per channel (rows and columns mod 4). Interpolation
            points 0, 1, -1, 1/2, -2 and infinity, chosen for accuracy (Barabasz et al. 2019
            discuss the choice; the usual 0, +-1, +-2 err 3x more, see the constants).
            Float32 error against the float64 sum on the bench layers (N128 C32 28x28 K64
            and N32 C64 56x56 K64, random normal x and g, He-scaled w), the tolerance
            rule's max |e| / (|ref| + rms(ref)) and rms(e) / rms(ref), forward and
            backward-data: wg4 8.8e-6 / 6.6e-7 and 1.1e-5 / 1.1e-6 on C32, 9.3e-6 / 9.0e-7
            and 1.3e-5 / 1.1e-6 on C64; wg 1.0-1.7e-6 / 1.6-2.6e-7; px (direct) 1.7-2.9e-6
            / 2.4-4.3e-7: 8x inside the float32 rule (1e-4). Chosen over wg where at least
            WG4_MIN_LANE_USE of its blocks' lanes hold output tiles (4x4 tiles leave more
            of a 32-tile block empty on small images: 14x14 fills 50%, 0.73x wg) and a
            task holds a whole sample (N1 C64 56x56 in 7 bands: 0.81x wg forward). One
            thread, per 32 samples of N128 C32 28x28 K64 forward (ms, wg -> wg4): placing
            0.43 -> 0.51, input transform 0.46 -> 0.32, products 2.76 -> 1.72, inverse
            transform 0.39 -> 0.46, copy to y 0.44 -> 0.26 (4.48 -> 3.27). How it got there:
            the transforms' constants typed as the array's dtype (an int times a float32
            is a float64 in Numba: input transform 0.77 -> 0.32, inverse 1.13 -> 0.51); the
            inverse transform storing a tile row's four columns side by side, so the copy
            to y reads whole rows (inverse + copy 0.51 + 0.65 -> 0.46 + 0.26). Per op, 2
            threads, one process taking turns with torch[channels_last] (ms): N128 C32
            28x28 K64 forward wg 10.90 -> wg4 9.42 (torch 11.31: 1.04x -> 1.20x),
            backward-data 12.32 -> 10.74 (torch 12.38: 1.00x -> 1.15x); alone, A/B against
            wg: forward 10.9 -> 7.7, backward-data 11.1 -> 9.0. Fwd+bwd in the bench (cl's
            backward-weights in both), four quiet runs: 0.97-1.05x torch[channels_last], the
            wg row beside it 0.89-0.93x.

The work split. Forward and backward-data tasks are (sample, run of groups, band of
pixel tiles), about 4 per thread: a sample's groups stay in one task while the samples
give every thread work (128 x 64 one-channel depthwise tasks, each allocating its
buffers, took 1.15x as long), and a band places only the grid rows its pixels read
(with N = 1, eight bands each placing the whole sample: N1 C64 56x56 K64 forward
1.36x, backward-data 1.29x faster without). Backward-weights splits into per-thread
pieces of (sample, band of output pixels): each piece sums into its own partial dw
and db (float64), then one serial pass adds them (no shared += inside prange). With
fewer samples than threads (N = 1) the bands keep every thread busy; before, N = 1
ran on one thread (N1 C64 56x56 K64: 2.37 -> 2.15 ms, 1.1x; each piece still copies
its rows of x to channels-last).

Tried and dropped (kept for the numbers):
    - a row tile (16 channels x 14 consecutive pixels of one stride-1 row, for strides
      (sh, 1)): about 1.1x the 6-pixel tile on such layers, removed for one strided tile;
    - in px: 8 x 48-pixel tiles (too few registers), groups of 4 tiles over all channel
      blocks (x kept in L1, weights from L2: slower), a 32-channel x 7-pixel row tile;
    - a first pixel-vectorised backward-weights for many channels (split loads and a
      partial buffer too big for L2: 1.5x slower than cl);
    - pxw masking the lanes past a row's end with a select (exact for NaN without a
      fallback): 0.89x the version before it on LeNet conv1 instead of 2.9x (the
      select stopped LLVM from vectorising the loop);
    - tile and cl backward-weights adding each tile into (K, Q) element by element
      (one partial layout for every version): 0.8x on LeNet conv2, whose 100 output
      pixels leave little loop to hide the stores; they add whole vectors into their
      own layout and copy it out once per thread;
    - im2col (with col written out) in batches of 1-2 samples (col in L2: COL_ELEMENTS
      2^18-2^19): no faster;
    - px tiles of kx = 2 (LeNet's six channels in 3 blocks of 128 pixels, no empty
      lanes): LeNet conv1 forward 0.76x kx = 8, and the fourth tile instance in conv_px
      slowed the other tiles too (0.8-0.9x; one run at load 9);
    - sv for big layers with an 8-channel x 3-pixel tile and output rows outside the
      channel blocks (a row's input rows stay in L2): N128 C32 28x28 K64 forward 0.90x,
      backward-data 0.97x px (the 3x7 tile: 0.82x, 0.87x; load about 3);
    - sv's tap loop over unsigned q (no negative-index test, 10 instead of 15 scalar
      instructions per 20 FMAs): LeNet conv2 fwd+bwd 1.90 vs 1.91 ms, no faster;
    - one inlined helper for the load and store of the backward-weights tiles' partial
      sums (pxw and sv share the loop): sv 0.82-0.90x, pxw 0.96-0.97x on LeNet (kept twice);
    - im2col copying the rows' inside part as one contiguous run instead of testing every
      element: a pass no faster (its 10 ms are the writes of an 8 MB col);
    - im2col's backward-data as dcol = w^T @ g (g read in place as a Gathered operand),
      then col2im: 40.4 ms against 40.6 for the convolution of the gradient (one thread,
      busy machine), kept out for one code path and no column buffer; masked loads for
      strips across a row's end then took the convolution's GEMM from 30.7 to 27.1 ms;
    - im2col's GEMM packing through a packer function passed as an argument (one driver
      for any operand): Numba does not cache such a function (its type holds the
      function's address), so every process would compile the GEMM again;
    - px in more pixel bands per sample (N32 C64 56x56 K64, whose padded sample is 861 KB,
      so a band's rows would stay in L2 across the channel blocks): 2, 4, 8 bands
      0.96x, 0.96x, 0.93x forward and 0.97x, 0.95x, 0.91x backward-data (the whole
      fwd+bwd of that layer runs at 314 GFLOP/s, 80% of the bench's SGEMM ceiling of
      390; torch[channels_last] 330; per op its backward-data took 17.8 ms, px 23.8);
    - im2col one sample at a time (col in L2, the GEMM writing y's (K, P) directly, no
      transposes), on N128 C32 28x28 K64 with the new GEMM: forward 28 vs 31 ms, but
      backward-weights 83 vs 57 and backward-data 56 vs 43 (small GEMMs);
    - sv's tile shape by wanted FMAs per load (lane use x KX*TP/(KX + TP)) instead of
      lane use alone: it picks 6x4 for LeNet's six channels, 0.98x 3x7 on conv1's
      forward and on conv2's backward-data (one process, 15 rounds each);
    - tile with TK = 64 channels (4 vectors x 6 pixels, aligned weight loads instead of
      px's unaligned pixel loads): N32 C64 56x56 forward 0.70x px (TK = 32: 0.88x); 24
      accumulators, 4 weight and 6 input registers do not fit 32;
    - a px tile of 6 channels x 64 pixels (24 accumulators, 4 pixel loads and 6
      broadcasts per 24 FMAs instead of 2 and 8 per 16): 0.86x kx = 8 on N32 C64 56x56,
      0.79x on N128 C32 28x28, forward and backward-data (one process, busy machine).
    - sv's cold compile, each against the step before it (CPU s, LeNet conv1 + conv2
      forward alone from an empty cache, one process each): the tile shape as a literally()
      argument of the parallel kernels (uncacheable: 60 s + 36 s); the prange body moved
      into one serial function (4.16 vs 3.90: the four levels stayed); the tiles inlined
      into it (inline="always"; 4.74 in the prange body, 2.88 vs 2.86 in the piece); the
      tile's FMAs as one LLVM vector intrinsic instead of Numba loops for SLP (3.10 vs
      3.04: the IR's size is not what costs); one tile shape for every layer (4,5): forward
      7-22% and backward-weights 9-20% slower on LeNet conv1 (per op, one process, turns).
    - wg's tile of the 16 products, other shapes (forward N128 C32 28x28 against px, one
      process, busy machine): 8 channels x 32 tiles 1.14x, 4 x 64 0.88x, 6 x 64 0.85x,
      12 x 32 0.84x, 16 x 16 0.63x;
    - im2col, second round (the auto path had reached 32 ms fwd+bwd on N128 C32 28x28 K64,
      im2col 58 ms, 0.55x; per pass, ms summed over the batches: forward place 2.1, GEMM
      14.0, transposes 3.0; backward-data place 3.9, GEMM 16.1, transposes 1.6;
      backward-weights place 2.1, GEMM 18.6, bias_grad 1.3), each in one process, turns:
      the GEMM's KC step cap at 288, 384, 576 against 256 (fwd+bwd 58.5, 59.9, 58.7 vs
      59.7 ms); MC 64, 256, 512 against 128 (56.8, 56.7, 56.6 vs 57.2); COL_ELEMENTS
      2^20, 2^21, 2^22 against 2^23 (65.4, 65.3, 64.3 vs 60.5); a placing loop over 2-D
      views (0.418 vs 0.422 ms a batch: placing runs at memory speed, numpy's padded copy
      0.63); the channels as the GEMM's rows over whole Wz-wide rows of the placed batch
      (a B strip of 32 pixels one run, column blocks packing their own B strips, the
      result copied into y row by row, no transposes): forward 25.2 vs 18.9, backward-
      data 27.6 vs 22.9 ms; the GEMM alone, plain arrays, 64 x 31080 x 288 ran at 215
      GFLOP/s against 257 for 29008 x 64 x 288 (c's long rows). What limits the passes
      is the GEMM on these skinny shapes (N = 64 or 32 columns: 205-257 GFLOP/s with
      plain arrays, the Gathered operands 8-10% below that) against the direct kernels'
      whole passes at about 385;
    - im2col's backward-weights from the batch placed channels last with the taps in (r, s,
      c) order (a strip of MR taps one run of channels: one vector copy per pixel instead
      of the MR x MR register transposes): 18.59 and 18.68 ms against 18.42 and 18.60 (two
      runs of 11 turns, one process; its placing 2.0 ms after a first 3.0, its GEMM 15.8-
      16.2): the transposes were not what the GEMM waits on;
    - wg placing the input rows just before the block that first reads them, and copying
      finished rows to y after each block, to spread the memory traffic over the
      compute (one thread, each against the version with both once per task in the same
      process): copying early 28.4 vs 24.2 ms, placing late 24.0 vs 22.3 ms; per-thread
      buffers allocated once instead of per task: no faster (10.0 vs 9.7 ms);
    - wg for backward-weights (dU = sum over tiles of (A g A^T) . (B^T d B), dw = G^T dU G,
      an 8 x 32-channel register tile per tap summed over the tiles, V transposed by
      transpose_block so the input channels are the lanes, a partial dU per thread):
      correct (2.5e-6 of the rms in float32), but N128 C32 28x28 K64 23.9-25.0 ms against
      cl's 18.4 (0.74-0.77x); one thread 36-39 ms, of which placing x and g 8 ms and the
      products 15 ms. A placing through a zeroed row buffer (parity split LANES columns
      at a time) did not change it;
    - wg's input transform with one inlined helper for B^T on a column and on a row (the
      two loops of _wg_in share their shape): one thread 25.2-25.5 vs 20.8-21.7 ms on
      N128 C32 28x28 forward, so the two loops stay written out;
    - wg's inverse transform writing a tile row's two columns interleaved (so the copy to
      y is contiguous): one thread 23.0 vs 22.4 ms, two threads 10.8 vs 10.4 ms (N128 C32
      28x28 forward, one process taking turns);
    - wg's copy to y in blocks of LANES/2 tile columns with constant trip counts (two
      vector loads, an interleave, one store; the last block shifted back inside the
      row): N128 C32 28x28 forward 11.17 vs 11.17 ms, backward-data 12.32 vs 12.39 ms.
      The copy takes 1.9 ms of forward's 11.8 and 1.1 ms of backward-data's 12.8
      (measured by skipping it), so it is bound by y's writes, not by its instructions;
      non-temporal stores were not tried: L3 here is 480 MiB and holds y for its reader;
    - cl's tile reduced over chunks of 56 or 112 pixels (all 64 output channels x 9 taps
      per chunk, so x's rows and g's stay in L1): 14.96 and 14.43 vs 14.25 ms, no faster;
      cl's tile walking output rows and columns instead of the pix_off table (one load
      and an index less per pixel): 15.39 vs 15.58 ms, within the noise, not kept;
    - wg4's inverse transform reading M directly instead of through a stack copy (one
      load pass less): 0.94 vs 0.51 ms per 32 samples (one thread, N128 C32 28x28 forward);
      storing its output rows as four planes and the copy to y interleaving them, as wg
      does: inverse + copy 0.51 + 0.65 vs 0.46 + 0.26 ms; the four columns stored from
      four planar vectors (one store per column and tile): 1.29 ms;
    - wg4 with the channel blocks outermost (per kb the 36 taps' products, then at once
      its inverse transform: M 36 KB instead of 295 KB, V read from L2 per kb): 0.96-0.97x
      (N128 C32 28x28 forward and backward-data, one process taking turns, 2 threads);
      two bands per sample (Z and Yb halved, the lanes as full, one tile row placed
      twice): 0.90x; the placing through a zeroed row buffer, then split into the four
      phases without a test: 0.99x; M's channel blocks WG_MPAD = 16 elements off 4 KB
      strides (wg and wg4): 0.98-1.01x; the inverse transform writing its block's pieces
      of output rows straight into y (no Yb, no copy): 0.91x forward, 0.93x
      backward-data. In context (one thread, the body with one phase switched off at a
      time) switching off the products saves 59% of wg4's time on this layer, the placing
      22%, the inverse transform 20%, the copy 16%, the input transform 14% (each 1.5-2.5x
      its time alone: the phases evict each other's data from L2);
    - cl prefetching the next sample's x and g into L2 (prefetcht1 on each cache line,
      spread over the current sample's tile calls), so the placing and the db row sums
      read L2: N128 C32 28x28 K64 1.007x and 0.991x (14.60 -> 14.50, 15.26 -> 15.40 ms,
      2 threads, one process taking turns): the hardware prefetchers already keep up;

The SLP vectorizer must be on (kernels/__init__.py); fastmath 'contract' only (FMA,
NaN-safe). Timings on this shared 2-core machine vary by +-30%: compare in one run
(bench/cases/conv.py).
"""

from collections import namedtuple
from functools import lru_cache

import numba
import numpy as np
from nnkern.kernels._cpu import (
    AVX512,
    VECTOR_LANES,
    run_pieces,
    stack_array,
    transpose_block,
    wide_vectors,
)
from nnkern.kernels._workspace import workspace
from nnkern.kernels.conv import rules
from nnkern.kernels.gemm import cpu as gemm_cpu
from numba import literally, njit, prange

# 'contract' lets LLVM fuse a*b+c into one FMA; it keeps NaN/inf semantics.
FM = {"contract"}
LANES = VECTOR_LANES  # float32 lanes of one vector register

# ----------------------------------------------------------------------------
# the geometry of one convolution, and the version table

Geometry = namedtuple("Geometry", "N C H W K R S OH OW sh sw ph pw dh dw G")
"""One conv2d: x (N, C, H, W), w (K, C/G, R, S), y (N, K, OH, OW); stride (sh, sw),
top/left padding (ph, pw), dilation (dh, dw), G groups."""


def geometry(x_shape, w_shape, out_shape, stride, padding, dilation, groups):
    """The Geometry of a conv2d from its array shapes and arguments."""
    N, C, H, W = x_shape
    K, _, R, S = w_shape
    return Geometry(N, C, H, W, K, R, S, out_shape[2], out_shape[3], *stride, *padding,
                    *dilation, groups)


VERSIONS = {
    "tile": ("forward", "backward_data", "backward_weights"),
    "im2col": ("forward", "backward_data", "backward_weights"),
    "cl": ("backward_weights",),
    "px": ("forward", "backward_data"),
    "pxw": ("backward_weights",),
    "sv": ("forward", "backward_data", "backward_weights"),
    "wg": ("forward", "backward_data"),
    "wg4": ("forward", "backward_data"),
}
"""Every version (see the header) and the ops it serves, in reading order."""

OPS = ("forward", "backward_data", "backward_weights")
# im2col in the rule, for few output pixels (small batches of small images): its GEMM splits
# the pixels (forward, backward-data) or the taps (backward-weights) among the threads in
# strips of 8, where the direct versions split samples and bands, and Winograd pays its
# weight transform per call (winograd_weights: 0.22 ms for C = K = 64, 3.5 ms for 256 when
# it was serial). Measured per op, the rule's version before against im2col (`python
# bench/conv_rule.py --before-rule`: one process taking turns, medians of 5), time ratios
# (> 1: im2col faster). With the serial transform (19:03 UTC 2026-12-07), forward and
# backward-data where the rule took wg gained 1.03-2.09 up to N*OH*OW = 1600 (N1 C64 14x14
# 1.89, 1.80; N1 C256 7x7 1.32, 1.39). With the transform in parallel (19:40 UTC), less:
# C64 up to 392 pixels 1.15-1.49 (N1 7x7 1.15, 1.16; N1 14x14 1.48, 1.49; N2 14x14 1.35,
# 1.33), C128 1.04-1.94 (N1 7x7 1.04, 1.09; N1 14x14 1.53, 1.86; N2 7x7 1.63, 1.94), C64 ->
# K128 1.34, 1.64, C32 -> K64 1.08, 1.11, C32 0.89-1.63 (N1 7x7 1.63, 1.59; N2 14x14 0.97,
# 0.89); but C256 0.70-1.11 (N1 7x7 0.88, 0.95; N2 7x7 1.11, 1.08) and from 784 pixels
# 0.66-1.05 (N1 C64 28x28 1.04, 0.99; N2 C64 28x28 0.97, 0.94; N4 C128 14x14 0.91, 1.05;
# N32 C64 56x56 0.70, 0.67): hence at most 400 pixels and C*K at most 128*128. Where the rule
# took px (16 channels, 1x1, 5x5) or tile (stride 2): 0.26-0.97, so only in place of wg.
# Backward-weights against cl (tile, pxw), the runs alike: 3x3 with 64 or more channels and
# N*OH*OW <= 3136 1.02-3.31 (N1 C64 56x56 1.00-1.20, N2 C64 28x28 1.05-1.23); C32 3x3 0.97-
# 1.16; N1 C32 5x5 1.32-1.39; stride 2 1.43-1.63; with fewer taps mixed (C16 3x3 0.74-1.40,
# 1x1 C128 0.80-0.86, C256 1.22-1.30, C1 5x5 0.38, C6 5x5 1.71); beyond 3136 pixels
# 0.89-1.04. On a machine with one core taken by another process, im2col's four parallel
# regions per pass lose more than the direct versions' one (backward-weights then 0.65-0.94
# on the 3x3 C64 layers).
IM2COL_MAX_PIXELS = 400  # N*OH*OW of the image written, forward and backward-data
IM2COL_MAX_CHANNELS2 = 128 * 128  # reduced x output channels, forward and backward-data
IM2COL_MAX_PIXELS_BW = 3136  # N*OH*OW, backward-weights
IM2COL_MIN_TAPS = 288  # Cg*R*S, backward-weights (32 channels of a 3x3 kernel)
FEW_CHANNELS = 4  # input channels per group up to which pxw beats cl and tile
SV_BYTES = 1 << 19  # sv's largest sample block (a layer's input or output): in L2


def _lane_use(n, lanes):
    # The fraction of vector lanes n channels fill, in blocks of `lanes`.
    return n / (-(-n // lanes) * lanes)


def _applies(version, op, geo):
    # Why `version` cannot run `op` on this geometry, or "" when it can.
    if op not in VERSIONS[version]:
        return f"{version} has no {op}"
    stride1 = (geo.sh, geo.sw) == (1, 1)
    if version == "px" and op == "forward" and not stride1:
        return f"px needs stride 1, got ({geo.sh}, {geo.sw})"
    if version in ("pxw", "sv") and not stride1:
        return f"{version} needs stride 1, got ({geo.sh}, {geo.sw})"
    if version in ("wg", "wg4") and op != "backward_weights":
        shape = (geo.R, geo.S, geo.sh, geo.sw, geo.dh, geo.dw, geo.G)
        if shape != (3, 3, 1, 1, 1, 1, 1):
            return (f"{version} needs a 3x3 kernel, stride 1, dilation 1 and groups 1, got kernel "
                    f"{geo.R}x{geo.S}, stride ({geo.sh}, {geo.sw}), dilation ({geo.dh}, "
                    f"{geo.dw}), groups {geo.G}")
    if version == "sv" and op != "backward_weights":
        # the rows sv writes (y's, or dx's for backward-data) hold at least one row piece
        width = geo.W if op == "backward_data" else geo.OW
        if width < SV_MIN_WIDTH:
            return f"sv needs rows of at least {SV_MIN_WIDTH} pixels, got {width}"
    return ""


def _sv_fits(geo, op):
    # "" when sv's rule holds: it applies (stride 1, rows as wide as a tile piece), a whole
    # block of LANES samples, and one sample block's input and output (per group, float32)
    # within SV_BYTES; else why not.
    not_here = _applies("sv", op, geo)
    if not_here:
        return not_here
    if geo.N < LANES:
        return f"{geo.N} samples fill under {LANES} lanes"
    Cg, Kg = geo.C // geo.G, geo.K // geo.G
    block = 4 * LANES * max(Cg * geo.H * geo.W, Kg * geo.OH * geo.OW)
    if block > SV_BYTES:
        return f"a block of {LANES} samples takes {block} bytes > {SV_BYTES}"
    return ""


def _auto(op, geo, im2col=True):
    # the rule; im2col=False: the rule among the direct versions only (algo "direct")
    Cg, Kg = geo.C // geo.G, geo.K // geo.G
    if not _sv_fits(geo, op):
        return "sv", f"stride 1, small layer: {LANES} samples as the vector lanes"
    if op in ("forward", "backward_data"):
        reduced, out = (geo.C, geo.K) if op == "forward" else (geo.K, geo.C)
        if not _applies("wg", op, geo) and min(reduced, out) >= WG_MIN_CHANNELS:
            # the image the op writes (y, or dx for backward-data)
            OH, OW = (geo.OH, geo.OW) if op == "forward" else (geo.H, geo.W)
            if (im2col and geo.N * OH * OW <= IM2COL_MAX_PIXELS
                    and reduced * out <= IM2COL_MAX_CHANNELS2):
                return "im2col", (f"{geo.N} x {OH}x{OW} output pixels, {reduced} -> {out} "
                                  "channels: too few pixels for Winograd to repay its "
                                  "transforms; one GEMM")
            use = _wg_lane_use(geo.N, reduced, out, OH, OW, 4)
            nband = _wg_bands(geo.N, reduced, out, OH, OW, 4)
            shape = f"3x3 stride 1, {reduced} -> {out} channels, {OH}x{OW} outputs"
            if use >= WG4_MIN_LANE_USE and nband == 1:
                return "wg4", (f"{shape} ({use:.0%} of F(4x4)'s lanes, whole samples): "
                               "Winograd F(4x4, 3x3)")
            return "wg", (f"{shape} ({use:.0%} of F(4x4)'s lanes, {nband} bands per sample): "
                          "Winograd F(2x2, 3x3)")
        if op == "backward_data" or (geo.sh, geo.sw) == (1, 1):
            return "px", "stride 1 (backward-data always is): pixel vectors"
        return "tile", f"stride ({geo.sh}, {geo.sw}): the 6-pixel channel tile"
    if (geo.sh, geo.sw) == (1, 1) and Cg <= FEW_CHANNELS:
        return "pxw", f"{Cg} input channels per group fill few channel lanes"
    taps = Cg * geo.R * geo.S
    if (im2col and geo.G == 1 and geo.N * geo.OH * geo.OW <= IM2COL_MAX_PIXELS_BW
            and taps >= IM2COL_MIN_TAPS):
        return "im2col", (f"{geo.N} x {geo.OH}x{geo.OW} output pixels to reduce over, {taps} "
                          "taps: one GEMM splits the taps among the threads")
    if _lane_use(Cg, TK) >= _lane_use(Kg, TK):
        return "cl", f"{Cg} input channels fill the lanes at least as well as {Kg} output"
    return "tile", f"{Kg} output channels fill the lanes better than {Cg} input"


def choose(op, geo, algo="auto"):
    """(version, why) for ``op`` ("forward", "backward_data" or "backward_weights") on
    Geometry ``geo``. ``algo``: "auto" (the measured rule), "direct" (the rule among the
    direct versions: every version but im2col, which the rule takes for few output
    pixels), "im2col", or a version name from VERSIONS; a version that cannot run this
    op or geometry gives way to the rule, and ``why`` says so.

    >>> geo = Geometry(8, 1, 28, 28, 6, 5, 5, 28, 28, 1, 1, 2, 2, 1, 1, 1)
    >>> choose("backward_weights", geo)[0]
    'pxw'
    >>> choose("backward_weights", geo._replace(N=128))[0]
    'sv'
    """
    if algo in ("auto", "direct"):
        return _auto(op, geo, algo == "auto")
    not_here = _applies(algo, op, geo)
    if not not_here:
        return algo, f"asked for {algo}"
    version, why = _auto(op, geo)
    return version, f"{not_here}; {why}"


# ----------------------------------------------------------------------------
# shared by the direct versions: the per-task padded input, weight packing, work split

Grid = namedtuple("Grid", "Hz Wz sh sw oh0 ow0")
"""Where a task places one sample's channels in its buffer (Cq, Hz, Wz): source pixel
(a, b) at (a*sh + oh0, b*sw + ow0), zeros elsewhere. Forward: the zero-padded input
(sh = sw = 1, oh0, ow0 = top/left padding). Backward-data: the gradient zero-stuffed
by the stride and padded for the flipped kernel."""


def forward_grid(geo):
    Hp = rules.padded_extent(geo.H, geo.ph, geo.OH, geo.R, geo.sh, geo.dh)
    Wp = rules.padded_extent(geo.W, geo.pw, geo.OW, geo.S, geo.sw, geo.dw)
    return Grid(Hp, Wp, 1, 1, geo.ph, geo.pw)


def backward_data_grid(geo):
    # dx[ih] = sum_r' gz[ih + r'*dh] * w[R-1-r'] with gz[oh*sh + (R-1)*dh - ph] = g[oh].
    return Grid(geo.H + (geo.R - 1) * geo.dh, geo.W + (geo.S - 1) * geo.dw, geo.sh, geo.sw,
                (geo.R - 1) * geo.dh - geo.ph, (geo.S - 1) * geo.dw - geo.pw)


@njit(cache=True)
def _place(src, n, c0, nc, buf, grid, i0, i1):
    # buf (nc*Hz*Wz,) flat = channels c0..c0+nc of sample n of src (N, C, A, B) placed
    # by grid (see Grid), zero elsewhere; negative offsets crop. Only the grid rows
    # i0..i1 are written: a task that computes a band of the output places the rows its
    # band reads (with N = 1, eight bands placing all rows cost as much as the compute).
    Hz, Wz, sh, sw, oh0, ow0 = grid
    A, B = src.shape[2], src.shape[3]
    # Source columns b0..b1 land inside the row: 0 <= b*sw + ow0 < Wz.
    b0 = max(0, (-ow0 + sw - 1) // sw)
    b1 = min(B, (Wz - 1 - ow0) // sw + 1)
    # (Plain loops: a slice assignment per row costs more than the row's copy.)
    for c in range(nc):
        for i in range(max(0, i0), min(Hz, i1)):
            row = (c * Hz + i) * Wz
            a = i - oh0
            if a < 0 or a % sh != 0 or a // sh >= A or b1 <= b0:
                for j in range(Wz):
                    buf[row + j] = 0
                continue
            a //= sh
            j0, j1 = b0 * sw + ow0, (b1 - 1) * sw + ow0 + 1
            for j in range(j0):
                buf[row + j] = 0
            for j in range(j1, Wz):
                buf[row + j] = 0
            if sw == 1:
                for j in range(b1 - b0):
                    buf[row + j0 + j] = src[n, c0 + c, a, b0 + j]
            else:
                for j in range(j0, j1):
                    buf[row + j] = 0
                for b in range(b0, b1):
                    buf[row + b * sw + ow0] = src[n, c0 + c, a, b]


@njit(cache=True)
def pack_weights(w, wpk, G, transpose):
    # w: (K, Cg, R, S); TB = wpk.shape[2] channels per block.
    # Without transpose: wpk (G*nkb, Cg*R*S, TB),
    #   wpk[g*nkb + kb, (c*R + r)*S + s, j] = w[g*Kg + kb*TB + j, c, r, s]   (0 past Kg).
    # With transpose (backward-data, output channels are the input's): wpk (G*ncb, Kg*R*S, TB),
    #   wpk[g*ncb + cb, (k*R + r)*S + s, j] = w[g*Kg + k, cb*TB + j, R-1-r, S-1-s] (0 past Cg).
    K, Cg, R, S = w.shape
    Kg = K // G
    nblk, TB = wpk.shape[0], wpk.shape[2]
    wpk[:] = 0
    for blk in range(nblk):
        if not transpose:
            nkb = nblk // G
            g, kb = blk // nkb, blk % nkb
            for j in range(min(TB, Kg - kb * TB)):
                k = g * Kg + kb * TB + j
                for c in range(Cg):
                    for r in range(R):
                        for s in range(S):
                            wpk[blk, (c * R + r) * S + s, j] = w[k, c, r, s]
        else:
            ncb = nblk // G
            g, cb = blk // ncb, blk % ncb
            for j in range(min(TB, Cg - cb * TB)):
                c = cb * TB + j
                for k in range(Kg):
                    for r in range(R):
                        for s in range(S):
                            flipped = w[g * Kg + k, c, R - 1 - r, S - 1 - s]
                            wpk[blk, (k * R + r) * S + s, j] = flipped


def _packed(w, G, Kout_g, Cq, R, S, TB, transpose):
    # w packed in blocks of TB output channels (see pack_weights).
    wpk = np.empty((G * -(-Kout_g // TB), Cq * R * S, TB), dtype=w.dtype)
    pack_weights(w, wpk, G, transpose)
    return wpk


@lru_cache(maxsize=64)
def _tap_offsets(Cq, R, S, dh, dw, Hz, Wz, multiple=1):
    # (Cq*R*S,) uint64: where tap q = (c, r, s) starts in a (Cq, Hz, Wz) buffer, the last
    # repeated up to a multiple of `multiple` entries (for loops over whole tap blocks).
    # Kept per geometry and shared, so never written (rebuilt per call, these tables and
    # sv's took about 0.3 of a 2.7 ms LeNet-5 training step at batch 64).
    c, r, s = np.meshgrid(np.arange(Cq), np.arange(R), np.arange(S), indexing="ij")
    off = ((c * Hz + r * dh) * Wz + s * dw).reshape(-1).astype(np.uint64)
    return np.concatenate([off, np.full((-off.size) % multiple, off[-1], np.uint64)])


def _split(N, G, tiles):
    # (group runs, pixel bands) per sample so that every thread gets about 4 tasks: the
    # groups of a sample stay in one task while the samples suffice (per-task buffers
    # and start-up cost more than a depthwise group's work: 128 x 64 one-channel tasks
    # took 1.5x as long as 128 tasks of 64 groups), then groups split, then pixels.
    want = 4 * numba.get_num_threads()
    ngc = min(G, max(1, -(-want // N)))
    return ngc, max(1, min(tiles, -(-want // (N * ngc))))


def _pieces(N):
    # Backward-weights: (pieces, bands per sample). Each piece sums a run of (sample,
    # band) items into its own partial dw; with fewer samples than threads the output
    # pixels are split into bands so every thread has work.
    threads = numba.get_num_threads()
    nband = 1 if N >= threads else -(-threads // N)
    return min(threads, N * nband), nband


@njit(cache=True)
def reduce_pieces(part, dbpart, dw, db, has_bias):
    # dw (K, Q) flat view = sum over pieces of part (npiece, K, Q); db[k] likewise from
    # dbpart (npiece, K) float64.
    npiece, K, Q = part.shape
    dwf = dw.reshape(K, Q)
    for k in range(K):
        for q in range(Q):
            acc = part[0, k, q]
            for piece in range(1, npiece):
                acc += part[piece, k, q]
            dwf[k, q] = acc
        if has_bias:
            acc = dbpart[0, k]
            for piece in range(1, npiece):
                acc += dbpart[piece, k]
            db[k] = acc


def _backward_weights(kernel, geo, g, x, dw, db, *args):
    # Run a backward-weights kernel into per-piece partials, then add them up.
    npiece, nband = _pieces(geo.N)
    part = np.empty((npiece, geo.K, dw.size // geo.K), dtype=dw.dtype)
    dbpart = np.empty((npiece, geo.K), dtype=np.float64)
    kernel(x, g.reshape(geo.N, geo.K, geo.OH * geo.OW), part, dbpart, nband, *args)
    has_bias = db is not None
    reduce_pieces(part, dbpart, dw, db if has_bias else dbpart[0], has_bias)


# ----------------------------------------------------------------------------
# version "tile": TK output channels x 6 pixels, any stride

# TK = 2 vectors of output channels (32 with AVX-512, 16 with AVX2) x TP pixels (or
# reduction rows): 12 accumulators, room for the broadcasts in 16 or 32 registers.
TK = 2 * LANES
TP = 6
TILE = TP * TK  # accumulators of one tile (a stack_array size)


@njit(fastmath=FM, cache=True)
def _tile_fwd(xf, wpk, blk, Q, crs_off, o0, o1, o2, o3, o4, o5, yf, ybase, P, nk, npix,
              bias, kbase):
    # One TK-channel x 6-pixel tile of y.
    # xf: one sample's padded input, flat; wpk: (blocks, Q, TK) packed weights;
    # crs_off (Q,) uint64; o0..o5: uint64 offsets of the 6 pixels' receptive fields;
    # yf: output, flat; the tile's channel k, pixel p lands at ybase + k*P + p.
    wide_vectors()
    acc = stack_array(yf, TILE)
    for i in range(TILE):
        acc[i] = 0
    for q in range(Q):
        c = crs_off[q]
        x0 = xf[c + o0]
        x1 = xf[c + o1]
        x2 = xf[c + o2]
        x3 = xf[c + o3]
        x4 = xf[c + o4]
        x5 = xf[c + o5]
        for k in range(TK):
            wv = wpk[blk, q, k]
            acc[k] += x0 * wv
            acc[TK + k] += x1 * wv
            acc[2 * TK + k] += x2 * wv
            acc[3 * TK + k] += x3 * wv
            acc[4 * TK + k] += x4 * wv
            acc[5 * TK + k] += x5 * wv
    for k in range(nk):
        bk = bias[kbase + k]
        for p in range(npix):
            yf[ybase + k * P + p] = acc[p * TK + k] + bk


@njit(parallel=True, fastmath=FM, cache=True)
def conv_tile(src, wpk, bias, yf, crs_off, pix_off, grid, G, Kg, P, ngc, nband):
    # y (N, G*Kg, P) flat = direct convolution of src (N, G*Cq, A, B) with packed
    # weights wpk (G*nkb, Cq*R*S, TK). Each task takes one sample, a run of the G groups
    # (one of ngc) and one band of 6-pixel tiles; per group it first places that
    # sample's input (Cq, Hz, Wz) in its own buffer (grid), which then stays in L2 for
    # all its tiles. crs_off (Q,) uint64
    # and pix_off (P rounded up to 6,) int64 index that buffer.
    N = src.shape[0]
    Cq = src.shape[1] // G
    Q = crs_off.shape[0]
    K = G * Kg
    nkb = (Kg + TK - 1) // TK
    ntile = (P + TP - 1) // TP
    ntask = N * ngc * nband
    for task in prange(ntask):
        n, gc, band = task // (ngc * nband), (task // nband) % ngc, task % nband
        buf = np.empty(Cq * grid.Hz * grid.Wz, dtype=src.dtype)
        for g in range(gc * G // ngc, (gc + 1) * G // ngc):
            t0, t1 = band * ntile // nband, (band + 1) * ntile // nband
            # grid rows the band's pixels read: from its first pixel's row to its last's
            # plus the kernel's extent (rows = offsets // Wz)
            i0 = pix_off[t0 * TP] // grid.Wz
            reach = pix_off[min(P, t1 * TP) - 1] + np.int64(crs_off[Q - 1] % (grid.Hz * grid.Wz))
            i1 = reach // grid.Wz + 1
            _place(src, n, g * Cq, Cq, buf, grid, i0, i1)
            for kb in range(nkb):
                k0 = g * Kg + kb * TK
                nk = min(TK, Kg - kb * TK)
                for t in range(t0, t1):
                    p0 = t * TP
                    _tile_fwd(
                        buf, wpk, g * nkb + kb, Q, crs_off,
                        np.uint64(pix_off[p0]), np.uint64(pix_off[p0 + 1]),
                        np.uint64(pix_off[p0 + 2]), np.uint64(pix_off[p0 + 3]),
                        np.uint64(pix_off[p0 + 4]), np.uint64(pix_off[p0 + 5]),
                        yf, (n * K + k0) * P + p0, P, nk, min(TP, P - p0), bias, k0,
                    )


def _pixel_offsets(OH, OW, sh, sw, Wz):
    # (OH*OW rounded up to TP,) int64: where output pixel p's receptive field starts in
    # a (., ., Wz) buffer; the last entry repeats to fill the last tile (computed, never
    # stored).
    oh, ow = np.meshgrid(np.arange(OH), np.arange(OW), indexing="ij")
    pix = (oh * sh * Wz + ow * sw).reshape(-1).astype(np.int64)
    return np.concatenate([pix, np.full((-pix.size) % TP, pix[-1], np.int64)])


def _run_tile(src, w, bias, yf, G, Kout_g, Cq, R, S, dil, grid, OH, OW, stride, transpose):
    # Pack, build the offset tables and launch conv_tile for an output (N, G*Kout_g, OH, OW)
    # read with `stride` from the per-task buffers `grid` builds from src.
    wpk = _packed(w, G, Kout_g, Cq, R, S, TK, transpose)
    crs_off = _tap_offsets(Cq, R, S, *dil, grid.Hz, grid.Wz)
    pix_off = _pixel_offsets(OH, OW, *stride, grid.Wz)
    ngc, nband = _split(src.shape[0], G, -(-OH * OW // TP))
    conv_tile(src, wpk, bias, yf, crs_off, pix_off, grid, G, Kout_g, OH * OW, ngc, nband)


@njit(fastmath=FM, cache=True)
def _tile_dw(xf, c0, c1, c2, c3, c4, c5, pix_off, pa, pb, gt, blk, partt, q0):
    # One TK-channel x 6-row tile of dw, reduced over pixels pa..pb of one sample.
    # xf: the sample's padded input, flat; c0..c5: uint64 crs offsets of the 6 rows;
    # gt: (blocks, P, TK) the sample's gradient with TK channels contiguous;
    # partt (blocks, Qpad, TK): the piece's partial sums, acc added as whole vectors.
    wide_vectors()
    acc = stack_array(partt, TILE)
    for i in range(TILE):
        acc[i] = 0
    # (Unsigned indices from a range that starts at 0: a signed pa + i needs a
    # negative-index check per load, and vectorised worse.)
    for i in range(pb - pa):
        p = np.uint64(pa) + np.uint64(i)
        o = np.uint64(pix_off[p])
        x0 = xf[o + c0]
        x1 = xf[o + c1]
        x2 = xf[o + c2]
        x3 = xf[o + c3]
        x4 = xf[o + c4]
        x5 = xf[o + c5]
        for k in range(TK):
            gv = gt[blk, p, k]
            acc[k] += x0 * gv
            acc[TK + k] += x1 * gv
            acc[2 * TK + k] += x2 * gv
            acc[3 * TK + k] += x3 * gv
            acc[4 * TK + k] += x4 * gv
            acc[5 * TK + k] += x5 * gv
    for j in range(TP):
        for k in range(TK):
            partt[blk, q0 + j, k] += acc[j * TK + k]


@njit(parallel=True, fastmath=FM, cache=True)
def conv_dw_tile(x, g, part, dbpart, nband, crs_off, pix_off, G, grid):
    # Partial sums: part[piece] (K, Q) of dw and dbpart[piece] (K,) float64 of db, piece
    # by piece over (sample, band of pixels) items. x: (N, C, H, W); g: (N, K, P);
    # crs_off (Q rounded up to 6,) uint64; pix_off indexes one padded sample (grid).
    N, K, P = g.shape
    Cq = x.shape[1] // G
    Kg = K // G
    Q = part.shape[2]
    npiece = part.shape[0]
    nkb = (Kg + TK - 1) // TK
    nblk = G * nkb
    Qt = crs_off.shape[0] // TP
    items = N * nband
    for piece in prange(npiece):
        dbpart[piece] = 0
        # The piece's sums in the tile's layout (whole-vector adds: per-element stores
        # into (K, Q) cost 20% on LeNet's conv2), copied to part[piece] at its end.
        partt = np.zeros((nblk, crs_off.shape[0], TK), dtype=part.dtype)
        buf = np.empty(Cq * grid.Hz * grid.Wz, dtype=x.dtype)
        gt = np.empty((nblk, P, TK), dtype=g.dtype)
        dbacc = np.empty(TK, dtype=g.dtype)
        for item in range(piece * items // npiece, (piece + 1) * items // npiece):
            n, band = item // nband, item % nband
            pa, pb = band * P // nband, (band + 1) * P // nband
            # gt[blk, p, j] = g[n, grp*Kg + kb*TK + j, p], 0 past the group's channels,
            # transposed 16 pixels at a time so both sides stay in L1.
            for blk in range(nblk):
                grp, kb = blk // nkb, blk % nkb
                k0, nk = grp * Kg + kb * TK, min(TK, Kg - kb * TK)
                for p0 in range(pa, pb, 16):
                    npx = min(16, pb - p0)
                    for j in range(TK):
                        if j < nk:
                            for i in range(npx):
                                gt[blk, p0 + i, j] = g[n, k0 + j, p0 + i]
                        else:
                            for i in range(npx):
                                gt[blk, p0 + i, j] = 0
                # db: one vector of TK channel sums per band, added up in float64.
                dbacc[:] = 0
                for p in range(pa, pb):
                    for j in range(TK):
                        dbacc[j] += gt[blk, p, j]
                for j in range(nk):
                    dbpart[piece, k0 + j] += dbacc[j]
            for grp in range(G):
                _place(x, n, grp * Cq, Cq, buf, grid, 0, grid.Hz)
                for kb in range(nkb):
                    for t in range(Qt):
                        q0 = t * TP
                        _tile_dw(
                            buf, crs_off[q0], crs_off[q0 + 1], crs_off[q0 + 2],
                            crs_off[q0 + 3], crs_off[q0 + 4], crs_off[q0 + 5],
                            pix_off, pa, pb, gt, grp * nkb + kb, partt, q0,
                        )
        for k in range(K):
            blk, j = k // Kg * nkb + k % Kg // TK, k % Kg % TK
            for q in range(Q):
                part[piece, k, q] = partt[blk, q, j]


def tile_backward_weights(geo, g, x, dw, db):
    grid = forward_grid(geo)
    Cg = geo.C // geo.G
    crs_off = _tap_offsets(Cg, geo.R, geo.S, geo.dh, geo.dw, grid.Hz, grid.Wz, TP)
    pix_off = _pixel_offsets(geo.OH, geo.OW, geo.sh, geo.sw, grid.Wz)
    _backward_weights(conv_dw_tile, geo, g, x, dw, db, crs_off, pix_off, geo.G, grid)


# ----------------------------------------------------------------------------
# version "im2col": im2col / col2im + the nnkern GEMM


@njit(parallel=True, cache=True)
def transpose_into(src, dst, n0, k0):
    # dst[n0 + j, k0 + k, p] = src[j, p, k]: src (m, P, Kg) and dst (N, K, P) C-contiguous.
    # The GEMM's (pixels, channels) result into y's (sample, channel, pixel) order, or dw's.
    # LANES x LANES blocks transposed in registers (transpose_block), the ragged edges
    # element by element; one (j, block of LANES channels) per iteration. (16 x 16 blocks
    # copied element by element: 5.3 ms of the 18.6 ms forward pass of N128 C32 28x28 K64.)
    m, P, Kg = src.shape
    K = dst.shape[1]
    srcf, dstf = src.reshape(-1), dst.reshape(-1)
    nkb = (Kg + LANES - 1) // LANES
    for t in prange(m * nkb):
        j, c0 = t // nkb, (t % nkb) * LANES
        nc = min(LANES, Kg - c0)
        for b0 in range(0, P, LANES):
            nr = min(LANES, P - b0)
            d = ((n0 + j) * K + k0 + c0) * P + b0
            if nr == LANES and nc == LANES:
                transpose_block(dstf, d, P, srcf, (j * P + b0) * Kg + c0, Kg, LANES, 0, LANES)
            else:
                for k in range(nc):
                    for i in range(nr):
                        dst[n0 + j, k0 + c0 + k, b0 + i] = src[j, b0 + i, c0 + k]


@njit(parallel=True, fastmath={"reassoc", "contract"}, cache=True)
def bias_grad(g, db):
    # db[k] = sum over n, p of g (N, K, P), one output channel per iteration.
    # Each (n, k) row is summed in g's dtype (vectorised: 'reassoc' keeps NaN/inf), the
    # row sums in float64.
    N, K, P = g.shape
    for k in prange(K):
        acc = 0.0
        for n in range(N):
            row = g[n, k, 0] * 0
            for p in range(P):
                row += g[n, k, p]
            acc += row
        db[k] = acc


# Samples per im2col batch: its column matrix (Q, nb*P), never stored, of about COL_ELEMENTS
# entries. The batch bounds what is stored (the placed batch, the GEMM's result, the packed
# gradient of backward-weights). 2^20 to 2^25 (the whole batch) ran alike on N128 C32 28x28
# K64 (fwd+bwd 51.7-53.4 ms, one process, turns); 2^23 runs a quarter of 2^21's parallel
# regions, and on a busy machine each region waits for its second thread.
COL_ELEMENTS = 1 << 23


def im2col_batches(N, Q, P, Kg):
    """(first sample, sample count) of the batches of one im2col pass: the column
    matrix (Q, nb*P) and the GEMM's result (nb*P, Kg) stay near COL_ELEMENTS."""
    nb = max(1, min(N, COL_ELEMENTS // max(1, max(Q, Kg) * P)))
    return [(n0, min(nb, N - n0)) for n0 in range(0, N, nb)]


@njit(parallel=True, cache=True)
def place_batch(src, n0, c0, buf, grid):
    # buf (nb, Cq, Hz, Wz) = channels c0..c0+Cq-1 of samples n0..n0+nb-1 of src placed by
    # grid among zeros (_place, a (sample, channel) per iteration): the array the column
    # matrix of the batch is read from.
    nb, Cq = buf.shape[0], buf.shape[1]
    for t in prange(nb * Cq):
        j, c = t // Cq, t % Cq
        _place(src, n0 + j, c0 + c, 1, buf[j, c].reshape(-1), grid, 0, grid.Hz)


@lru_cache(maxsize=16)
def im2col_offsets(Cq, R, S, dil, grid, OH, OW, stride, nb):
    """(pix, tap): int64 offset tables of the column matrix of nb samples placed by grid
    (place_batch: an array (nb, Cq, Hz, Wz)): col[q, m] = buf[tap[q] + pix[m]] for tap q =
    (c, r, s) and output pixel m = (sample j, oh, ow). Kept per geometry, never written."""
    Hz, Wz = grid.Hz, grid.Wz
    tap = _tap_offsets(Cq, R, S, *dil, Hz, Wz).astype(np.int64)
    pix = _pixel_offsets(OH, OW, *stride, Wz)[: OH * OW]
    pix = (np.arange(nb, dtype=np.int64)[:, None] * Cq * Hz * Wz + pix).reshape(-1)
    return pix, tap


@lru_cache(maxsize=16)
def gradient_offsets(K, P, nb):
    """(gpix, gch): int64 offset tables of a batch of nb samples of a gradient (nb, K, P),
    read in place: g[gch[k] + gpix[m]] is channel k at pixel m = (sample j, p)."""
    gpix = (np.arange(nb, dtype=np.int64)[:, None] * K * P + np.arange(P)).reshape(-1)
    return gpix, np.arange(K, dtype=np.int64) * P


def _run_im2col(src, w, bias, out, G, Kout_g, Cq, R, S, dil, grid, OH, OW, stride, transpose):
    # out (N, G*Kout_g, OH, OW) = the convolution of src placed by grid (the arguments of
    # _run_tile): per batch of samples and group, the GEMM (nb*P, Kout_g) = col^T @ wmat
    # (+ bias in its epilogue), moved into out by transpose_into. col^T is a Gathered
    # operand (pixel offsets x tap offsets into the placed batch), so the GEMM packs its
    # strips of MR pixels straight from the batch, mostly one vector copy per tap. The
    # pixels are the GEMM's rows, which it splits among the threads: with the Kout_g
    # (often 64) channels as rows, each thread streamed all of col from L3 once per 8-row
    # block (80 vs 16 ms of GEMM per forward pass on N128 C32 28x28 K64).
    N, P, Q = src.shape[0], OH * OW, Cq * R * S
    wmat = _packed(w, G, Kout_g, Cq, R, S, Kout_g, transpose).reshape(-1)  # (G, Q, Kout_g)
    # wmat[g] as a Gathered operand too (rows of Kout_g values), so forward, backward-data
    # and backward-weights compile one GEMM between them (two: 13.6 s of cold compile for
    # the three ops, one: 9.8 s; the column-matrix version before: 7.9 s; CPU seconds)
    w_rows, w_cols = np.arange(Q, dtype=np.int64) * Kout_g, np.arange(Kout_g, dtype=np.int64)
    out3 = out.reshape(N, G * Kout_g, P)
    for n0, m in im2col_batches(N, Q, P, Kout_g):
        buf = workspace("conv.placed", (m, Cq, grid.Hz, grid.Wz), src.dtype)
        res = workspace("conv.gemm_out", (m * P, Kout_g), src.dtype)
        pix, tap = im2col_offsets(Cq, R, S, dil, grid, OH, OW, stride, m)
        for g in range(G):
            place_batch(src, n0, g * Cq, buf, grid)
            b = None if bias is None else bias[g * Kout_g : (g + 1) * Kout_g]
            col_t = gemm_cpu.Gathered(buf.reshape(-1), pix, tap)
            w_t = gemm_cpu.Gathered(wmat, w_rows + g * Q * Kout_g, w_cols)
            gemm_cpu.gemm_operands(col_t, w_t, res, False, False, False, b)
            transpose_into(res.reshape(m, P, Kout_g), out3, n0, g * Kout_g)


def im2col_forward(geo, x, w, b, y):
    """y = conv2d(x, w) + b, the column matrix of x's zero-padded batches times w^T."""
    G = geo.G
    _run_im2col(x, w, b, y, G, geo.K // G, geo.C // G, geo.R, geo.S, (geo.dh, geo.dw),
                forward_grid(geo), geo.OH, geo.OW, (geo.sh, geo.sw), False)


def im2col_backward_data(geo, g, w, dx):
    """dx, as the direct versions compute it: the stride-1 convolution of the gradient
    zero-stuffed and padded (backward_data_grid) with the flipped, transposed weights."""
    G = geo.G
    _run_im2col(g, w, None, dx, G, geo.C // G, geo.K // G, geo.R, geo.S, (geo.dh, geo.dw),
                backward_data_grid(geo), geo.H, geo.W, (1, 1), True)


def im2col_backward_weights(geo, g, x, dw, db):
    """dw[g]^T = sum over batches of col @ g[batch, g]^T (the GEMM accumulates; pixels as
    its reduction, col's Q rows as its rows, not g's Kg: see _run_im2col), both operands
    Gathered (col from the padded batch, g in place), transposed into dw at the end."""
    G, Kg, Cg = geo.G, geo.K // geo.G, geo.C // geo.G
    Q, P = Cg * geo.R * geo.S, geo.OH * geo.OW
    grid = forward_grid(geo)
    dwt = workspace("conv.dw_t", (G, Q, Kg), x.dtype)
    g3 = g.reshape(geo.N, geo.K, P)
    for n0, m in im2col_batches(geo.N, Q, P, Kg):
        buf = workspace("conv.placed", (m, Cg, grid.Hz, grid.Wz), x.dtype)
        pix, tap = im2col_offsets(Cg, geo.R, geo.S, (geo.dh, geo.dw), grid, geo.OH, geo.OW,
                                  (geo.sh, geo.sw), m)
        gpix, gch = gradient_offsets(geo.K, P, m)
        gb = g3[n0 : n0 + m].reshape(-1)
        for grp in range(G):
            place_batch(x, n0, grp * Cg, buf, grid)
            col = gemm_cpu.Gathered(buf.reshape(-1), tap, pix)
            g_t = gemm_cpu.Gathered(gb, gpix, gch + grp * Kg * P)
            # one row block of dwt per thread: each block reads all of g's packed panel
            # (nb*P x Kg), which leaves L2 (4 blocks per thread: 19.3 vs 16.7 ms per pass)
            gemm_cpu.gemm_operands(col, g_t, dwt[grp], False, False, n0 > 0, None, 1)
    transpose_into(dwt, dw.reshape(G, Kg, Q), 0, 0)
    if db is not None:
        bias_grad(g3, db)


# ----------------------------------------------------------------------------
# version "cl": backward-weights from a channels-last copy of x (g read as it is)

# The tile: KW output channels x TK input channels of one tap, KW*TK/lanes accumulators
# (16 zmm with AVX-512).
KW = 8
CL_TILE = KW * TK


@njit(fastmath=FM, cache=True)
def _tile_cl(xt, xb, tap, pix_off, pa, pb, gf, o0, o1, o2, o3, o4, o5, o6, o7, part,
             piece, kbase, nkw, cbase, nc, Cg, t):
    # One KW-channel x TK-channel tile of dw for tap t, reduced over pixels pa..pb of one
    # sample: acc[i, c] = sum_p gf[o_i + p] * xt[xb + (pix_off[p] + tap)*TK + c].
    # xt: the sample's padded input, channels last in blocks of TK (flat); gf: the
    # gradient as it is (flat), o0..o7 the starts of the tile's KW channel rows;
    # part (pieces, K, RS*Cg), taps outer: acc[i, c] is added at (kbase + i,
    # t*Cg + cbase + c), whole vectors (cl_backward_weights reorders it into dw).
    wide_vectors()
    acc = stack_array(part, CL_TILE)
    for i in range(CL_TILE):
        acc[i] = 0
    for i in range(pb - pa):  # (unsigned, from 0: see _tile_dw)
        pu = np.uint64(pa) + np.uint64(i)
        xo = xb + (pix_off[pu] + tap) * np.uint64(TK)
        g0 = gf[o0 + pu]
        g1 = gf[o1 + pu]
        g2 = gf[o2 + pu]
        g3 = gf[o3 + pu]
        g4 = gf[o4 + pu]
        g5 = gf[o5 + pu]
        g6 = gf[o6 + pu]
        g7 = gf[o7 + pu]
        for c in range(TK):
            xv = xt[xo + np.uint64(c)]
            acc[c] += g0 * xv
            acc[TK + c] += g1 * xv
            acc[2 * TK + c] += g2 * xv
            acc[3 * TK + c] += g3 * xv
            acc[4 * TK + c] += g4 * xv
            acc[5 * TK + c] += g5 * xv
            acc[6 * TK + c] += g6 * xv
            acc[7 * TK + c] += g7 * xv
    _add_cl_tile(acc, part, piece, kbase, nkw, t * Cg + cbase, Cg, nc, 1, KW)


@njit(inline="always")
def _add_cl_tile(acc, part, piece, kbase, nkw, base, Cg, nc, ntap, kw):
    # Add a cl tile's accumulators acc[(j*kw + i)*TK + c] (ntap taps from t, kw channel
    # rows) at part[piece, kbase + i, base + j*Cg + c], base = t*Cg + cbase, whole
    # vectors. ntap and kw are constants at each call (inlined), so the loops unroll.
    for j in range(ntap):
        b = np.uint64(base + j * Cg)
        if nc == TK:  # a whole channel block: no lane test, so the adds stay vectors
            for i in range(kw):  # (constant trip counts: see _tile_dw)
                if i < nkw:
                    for c in range(TK):
                        part[piece, kbase + i, b + np.uint64(c)] += acc[(j * kw + i) * TK + c]
        else:
            for i in range(kw):
                for c in range(TK):
                    if i < nkw and c < nc:
                        part[piece, kbase + i, b + np.uint64(c)] += acc[(j * kw + i) * TK + c]


KW3 = 4
CL3_TILE = 3 * KW3 * TK


@njit(fastmath=FM, cache=True)
def _tile_cl3(xt, xb, tap, dw, pix_off, pa, pb, gf, o0, o1, o2, o3, part,
              piece, kbase, nkw, cbase, nc, Cg, t):
    # Three taps of one kernel row at once (t, t+1, t+2; padded-pixel offsets tap,
    # tap + dw, tap + 2*dw), KW3 output channels x TK input channels each: a broadcast
    # of g serves three taps (per pixel 4 broadcasts, 6 vector loads, 24 FMAs).
    wide_vectors()
    acc = stack_array(part, CL3_TILE)
    for i in range(CL3_TILE):
        acc[i] = 0
    d1 = dw * np.uint64(TK)
    for i in range(pb - pa):
        pu = np.uint64(pa) + np.uint64(i)
        xo = xb + (pix_off[pu] + tap) * np.uint64(TK)
        g0 = gf[o0 + pu]
        g1 = gf[o1 + pu]
        g2 = gf[o2 + pu]
        g3 = gf[o3 + pu]
        for c in range(TK):
            xa = xt[xo + np.uint64(c)]
            xb1 = xt[xo + d1 + np.uint64(c)]
            xc = xt[xo + d1 + d1 + np.uint64(c)]
            acc[c] += g0 * xa
            acc[TK + c] += g1 * xa
            acc[2 * TK + c] += g2 * xa
            acc[3 * TK + c] += g3 * xa
            acc[4 * TK + c] += g0 * xb1
            acc[5 * TK + c] += g1 * xb1
            acc[6 * TK + c] += g2 * xb1
            acc[7 * TK + c] += g3 * xb1
            acc[8 * TK + c] += g0 * xc
            acc[9 * TK + c] += g1 * xc
            acc[10 * TK + c] += g2 * xc
            acc[11 * TK + c] += g3 * xc
    _add_cl_tile(acc, part, piece, kbase, nkw, t * Cg + cbase, Cg, nc, 3, KW3)


@njit(fastmath={"reassoc", "contract"}, cache=True)
def _row_sum(gf, src, n):
    # sum of gf[src : src + n] in gf's dtype, vectorised ('reassoc' keeps NaN/inf).
    acc = gf[src] * 0
    for p in range(n):
        acc += gf[src + np.uint64(p)]
    return acc


@njit(cache=True)
def _live_pixels(skip, r, dh, ph, sh, H, OW, pa, pb):
    # The pixels pa..pb that kernel row r reaches inside the image: with skip (g finite),
    # the output rows oh with 0 <= oh*sh + r*dh - ph < H; otherwise all of them.
    if not skip:
        return pa, pb
    lo = ph - r * dh
    oh_lo = max(0, -(-lo // sh))
    oh_hi = (H - 1 + lo) // sh
    return max(pa, oh_lo * OW), min(pb, (oh_hi + 1) * OW)


@njit(parallel=True, fastmath=FM, cache=True)
def conv_dw_cl(x, g, part, dbpart, nband, pix_off, taps, G, Hp, Wp, ph, pw, OW, sh, ext, S,
               dh):
    # Partial sums: part[piece] (K, Cg*R*S) of dw and dbpart[piece] (K,) float64 of db,
    # piece by piece over (sample, band of pixels) items. x: (N, C, H, W); g: (N, K, P);
    # pix_off (P,) and taps (R*S,) uint64: output pixel p, tap t reads padded pixel
    # pix_off[p] + taps[t]; output row oh reads padded rows oh*sh .. oh*sh + ext.
    N, K, P = g.shape
    H, W = x.shape[2], x.shape[3]
    Cx = x.shape[1]
    Cg = Cx // G
    Kg = K // G
    RS = taps.shape[0]
    npiece = part.shape[0]
    ncb = (Cg + TK - 1) // TK
    gf = g.reshape(N * K * P)
    xf = x.reshape(N * Cx * H * W)
    items = N * nband
    # 3-wide kernels take the three-tap tile (_tile_cl3: a g broadcast serves a kernel
    # row's three taps, 1.04-1.05x on the 3x3 layers); other widths the KW x TK tile
    tri = S == 3
    for piece in prange(npiece):
        part[piece] = 0
        dbpart[piece] = 0
        # xt[cb, (ih + ph)*Wp + iw + pw, j] = x[n, grp*Cg + cb*TK + j, ih, iw]; the
        # padding and the channels past Cg stay zero.
        xt = np.zeros(ncb * Hp * Wp * TK, dtype=x.dtype)
        for item in range(piece * items // npiece, (piece + 1) * items // npiece):
            n, band = item // nband, item % nband
            pa, pb = band * P // nband, (band + 1) * P // nband
            for grp in range(G):
                for cb in range(ncb):
                    nc = min(TK, Cg - cb * TK)
                    c0 = grp * Cg + cb * TK
                    # the input rows the band reads (all of them with one band)
                    ih0 = max(0, pa // OW * sh - ph)
                    ih1 = min(H, (pb - 1) // OW * sh + ext - ph + 1)
                    if W >= LANES:
                        # LANES channels x LANES pixels per transpose_block (the last
                        # block of a row shifted back inside it)
                        for ih in range(ih0, ih1):
                            drow = ((cb * Hp + ih + ph) * Wp + pw) * TK
                            for half in range(min(TK, nc + LANES - 1) // LANES):
                                srow = ((n * Cx + c0 + half * LANES) * H + ih) * W
                                for iw0 in range(0, W, LANES):
                                    s0 = min(iw0, W - LANES)
                                    transpose_block(
                                        xt, drow + iw0 * TK + half * LANES, TK, xf,
                                        srow + s0, H * W, min(LANES, nc - half * LANES),
                                        iw0 - s0, min(LANES, W - iw0),
                                    )
                        continue
                    # Narrow rows pixel by pixel, so the stores are contiguous (the TK
                    # loads of a pixel hit the same lines as the previous pixel's).
                    for ih in range(ih0, ih1):
                        for iw in range(W):
                            d = np.uint64(((cb * Hp + ih + ph) * Wp + pw + iw) * TK)
                            src = np.uint64(((n * Cx + c0) * H + ih) * W + iw)
                            for j in range(nc):
                                xt[d + np.uint64(j)] = xf[src + np.uint64(j * H * W)]
                gsum = gf[0] * 0
                for k in range(Kg):
                    src = np.uint64((n * K + grp * Kg + k) * P + pa)
                    rsum = _row_sum(gf, src, pb - pa)
                    dbpart[piece, grp * Kg + k] += rsum
                    gsum += rsum
                # With g finite here (its sum is), the output rows whose tap reads only
                # the padding add nothing (0 * g) and are skipped; otherwise they run, so
                # 0 * inf makes NaN as in the direct sum.
                skip = gsum - gsum == 0
                if tri:
                    for k0 in range(0, Kg, KW3):
                        last = min(KW3, Kg - k0) - 1
                        o = np.uint64((n * K + grp * Kg + k0) * P)
                        o1 = o + np.uint64(min(1, last) * P)
                        o2 = o + np.uint64(min(2, last) * P)
                        o3 = o + np.uint64(min(3, last) * P)
                        for cb in range(ncb):
                            for t in range(0, RS, 3):
                                qa, qb = _live_pixels(skip, t // S, dh, ph, sh, H, OW, pa, pb)
                                if qb <= qa:
                                    continue
                                _tile_cl3(
                                    xt, np.uint64(cb * Hp * Wp * TK), taps[t], taps[1] - taps[0],
                                    pix_off, qa, qb, gf, o, o1, o2, o3, part, piece,
                                    grp * Kg + k0, last + 1, cb * TK, min(TK, Cg - cb * TK),
                                    Cg, t,
                                )
                    continue
                for k0 in range(0, Kg, KW):
                    last = min(KW, Kg - k0) - 1
                    o = np.uint64((n * K + grp * Kg + k0) * P)
                    # Rows past the group's channels repeat its last one (never stored).
                    o1 = o + np.uint64(min(1, last) * P)
                    o2 = o + np.uint64(min(2, last) * P)
                    o3 = o + np.uint64(min(3, last) * P)
                    o4 = o + np.uint64(min(4, last) * P)
                    o5 = o + np.uint64(min(5, last) * P)
                    o6 = o + np.uint64(min(6, last) * P)
                    o7 = o + np.uint64(min(7, last) * P)
                    for cb in range(ncb):
                        for t in range(RS):
                            qa, qb = _live_pixels(skip, t // S, dh, ph, sh, H, OW, pa, pb)
                            if qb <= qa:
                                continue
                            _tile_cl(
                                xt, np.uint64(cb * Hp * Wp * TK), taps[t], pix_off, qa, qb,
                                gf, o, o1, o2, o3, o4, o5, o6, o7, part, piece,
                                grp * Kg + k0, last + 1, cb * TK, min(TK, Cg - cb * TK),
                                Cg, t,
                            )


def cl_backward_weights(geo, g, x, dw, db):
    Hp, Wp = forward_grid(geo)[:2]
    oh, ow = np.meshgrid(np.arange(geo.OH), np.arange(geo.OW), indexing="ij")
    pix_off = (oh * geo.sh * Wp + ow * geo.sw).reshape(-1).astype(np.uint64)
    r, s = np.meshgrid(np.arange(geo.R), np.arange(geo.S), indexing="ij")
    taps = (r * geo.dh * Wp + s * geo.dw).reshape(-1).astype(np.uint64)
    # partials in cl's layout (K, RS, Cg), reordered into dw's (K, Cg, R, S) once
    RS, Cg = geo.R * geo.S, geo.C // geo.G
    dwt = np.empty((geo.K, RS, Cg), dtype=dw.dtype)
    _backward_weights(conv_dw_cl, geo, g, x, dwt, db, pix_off, taps, geo.G, Hp, Wp,
                      geo.ph, geo.pw, geo.OW, geo.sh, (geo.R - 1) * geo.dh, geo.S, geo.dh)
    dw[...] = dwt.transpose(0, 2, 1).reshape(dw.shape)


# ----------------------------------------------------------------------------
# version "px": forward / backward-data for stride 1, vectorised over pixels

# A tile is kx output channels x PX_TILE/kx pixels of the padded grid: PX_TILE/lanes
# accumulators (16 zmm with AVX-512), kx in PX_KX.
PX_TILE = 16 * LANES if AVX512 else 8 * LANES
PX_KX = (8, 4, 1)


@njit(fastmath=FM, cache=True)
def _tile_px(kx, xf, wpk, blk, Q, crs_off, p0, yb, yo, Pp):
    # One kx-channel x px-pixel tile of y on the padded grid: pixel p = oh*Wz + ow of the
    # (Cq, Hz, Wz) buffer xf reads xf[crs_off[q] + p] at tap q (stride 1), so px
    # neighbouring pixels are one contiguous load per q, across row ends too (the lanes
    # at ow >= OW are computed and dropped). Per q: px/lanes loads, kx broadcasts of the
    # packed weights wpk[blk, q, :kx], kx*px/lanes FMAs. Channel i of the tile goes to
    # yb[yo + i*Pp + 0 .. px] with whole-vector stores. kx is a compile-time constant.
    literally(kx)
    wide_vectors()
    px = PX_TILE // kx
    acc = stack_array(yb, PX_TILE)
    for i in range(PX_TILE):
        acc[i] = 0
    for q in range(Q):
        c = crs_off[q] + p0
        for j in range(px):
            xv = xf[c + np.uint64(j)]
            for i in range(kx):
                acc[i * px + j] += wpk[blk, q, i] * xv
    for i in range(kx):
        row = yo + np.uint64(i * Pp)
        for j in range(px):
            yb[row + np.uint64(j)] = acc[i * px + j]


@njit(parallel=True, fastmath=FM, cache=True)
def conv_px(src, wpk, bias, yf, crs_off, grid, G, Kg, OH, OW, nbuf, ngc, nband):
    # y (N, G*Kg, OH*OW) flat = stride-1 direct convolution of src (N, G*Cq, A, B),
    # placed by grid into a (Cq, Hz, Wz) buffer of nbuf elements (zero tail), with
    # packed weights wpk (G*nkb, Cq*R*S, kx). Each task takes one sample, a run of the
    # G groups (one of ngc) and one band of px-pixel tiles of the padded grid (Pp =
    # OH*Wz rounded up to px pixels); a channel block's tiles land in yb (kx, Pp) and
    # its rows are copied to y.
    N = src.shape[0]
    Cq = src.shape[1] // G
    Q = crs_off.shape[0]
    K = G * Kg
    P = OH * OW
    Wz = grid.Wz
    kx = wpk.shape[2]
    px = PX_TILE // kx
    nkb = (Kg + kx - 1) // kx
    Pp = (OH * Wz + px - 1) // px * px
    ntile = Pp // px
    ntask = N * ngc * nband
    for task in prange(ntask):
        n, gc, band = task // (ngc * nband), (task // nband) % ngc, task % nband
        buf = np.empty(nbuf, dtype=src.dtype)
        buf[Cq * grid.Hz * Wz:] = 0
        yb = np.empty(kx * Pp, dtype=yf.dtype)
        t0, t1 = band * ntile // nband, (band + 1) * ntile // nband
        pa, pb = t0 * px, t1 * px
        # the rows the band's pixels read, one more for the lanes past its last row's end
        reach = np.int64(crs_off[Q - 1] % (grid.Hz * Wz)) + pb
        for g in range(gc * G // ngc, (gc + 1) * G // ngc):
            _place(src, n, g * Cq, Cq, buf, grid, pa // Wz, reach // Wz + 1)
            for kb in range(nkb):
                k0 = g * Kg + kb * kx
                oh = pa // Wz  # the next output row to copy to y
                for t in range(t0, t1):
                    blk, p0 = g * nkb + kb, np.uint64(t * px)
                    if kx == 8:
                        _tile_px(8, buf, wpk, blk, Q, crs_off, p0, yb, p0, Pp)
                    elif kx == 4:
                        _tile_px(4, buf, wpk, blk, Q, crs_off, p0, yb, p0, Pp)
                    else:
                        _tile_px(1, buf, wpk, blk, Q, crs_off, p0, yb, p0, Pp)
                    # Copy the rows (padded-grid pixels oh*Wz + ow, ow < OW) that are now
                    # complete, so the stores to y spread over the compute.
                    end = (t + 1) * px
                    while oh < OH and (oh * Wz + OW <= end or t == t1 - 1) and oh * Wz < pb:
                        lo, hi = max(pa, oh * Wz), min(pb, oh * Wz + OW)
                        for k in range(min(kx, Kg - kb * kx)):
                            d = np.uint64((n * K + k0 + k) * P + oh * OW + lo - oh * Wz)
                            e = np.uint64(k * Pp + lo)
                            bk = bias[k0 + k]
                            for p in range(hi - lo):
                                yf[d + np.uint64(p)] = yb[e + np.uint64(p)] + bk
                        oh += 1


def _px_channels(Kout_g):
    # The tile's channel count: the smallest of PX_KX that holds Kout_g, else the largest.
    for kx in sorted(PX_KX):
        if Kout_g <= kx:
            return kx
    return max(PX_KX)


def _run_px(src, w, bias, yf, G, Kout_g, Cq, R, S, dil, grid, OH, OW, transpose):
    kx = _px_channels(Kout_g)
    wpk = _packed(w, G, Kout_g, Cq, R, S, kx, transpose)
    crs_off = _tap_offsets(Cq, R, S, *dil, grid.Hz, grid.Wz)
    px = PX_TILE // kx
    Pp = -(-OH * grid.Wz // px) * px
    nbuf = max(Cq * grid.Hz * grid.Wz, int(crs_off.max()) + Pp)
    ngc, nband = _split(src.shape[0], G, Pp // px)
    conv_px(src, wpk, bias, yf, crs_off, grid, G, Kout_g, OH, OW, nbuf, ngc, nband)


# ----------------------------------------------------------------------------
# version "pxw": backward-weights for stride 1, vectorised over pixels

# A tile is kb output channels x qb rows q, one accumulator vector (LANES pixels) each;
# (kb, qb) in PXW_SHAPES.
PXW_TILE = 16 * LANES
PXW_SHAPES = ((4, 4), (1, 9))


@njit(fastmath=FM, cache=True)
def _tile_pxw(kb, qb, xz, xs, gz, gs, nsamp, go, taps, q0, pa, pb, Pz, partv, k0):
    # partv[k0 + i, q0 + j, :] += sum over samples m < nsamp and pixels p in [pa, pb)
    # (steps of LANES) of gz[m*gs + go + i*Pz + p + l] * xz[m*xs + taps[q0 + j] + p + l],
    # lane l of a vector (gz is zero at the pixels that do not exist). The sums stay
    # vectors (LANES partial sums each) until the piece ends: one horizontal sum per tile
    # and sample cost as much as the loop on LeNet's 10x10 outputs. kb and qb are
    # compile-time constants.
    literally(kb)
    literally(qb)
    wide_vectors()
    acc = stack_array(partv, PXW_TILE)
    for i in range(kb):
        for j in range(qb):
            for lane in range(LANES):
                acc[(i * qb + j) * LANES + lane] = partv[k0 + i, q0 + j, lane]
    for m in range(nsamp):
        xm = np.uint64(m * xs)
        gm = np.uint64(m * gs) + go
        for v in range((pb - pa) // LANES):
            pu = np.uint64(pa + v * LANES)
            for j in range(qb):
                xo = xm + taps[q0 + j] + pu
                for i in range(kb):
                    gi = gm + np.uint64(i * Pz) + pu
                    a = (i * qb + j) * LANES
                    for lane in range(LANES):
                        acc[a + lane] += gz[gi + np.uint64(lane)] * xz[xo + np.uint64(lane)]
    for i in range(kb):
        for j in range(qb):
            for lane in range(LANES):
                partv[k0 + i, q0 + j, lane] = acc[(i * qb + j) * LANES + lane]


@njit(cache=True)
def _finite(xz, n):
    # Whether xz[:n] holds no NaN or inf (x - x is 0 exactly for finite x).
    acc = xz[0] * 0
    for i in range(n):
        acc += xz[i] - xz[i]
    return acc == 0


@njit(cache=True)
def _exact_pxw(xz, mask, gz, Pz, taps, pa, pb, part, piece, kbase, Kg, Q):
    # _tile_pxw's sums for one sample over the pixels that exist only (mask 1).
    for k in range(Kg):
        for q in range(Q):
            acc = part[piece, kbase + k, q] * 0
            for p in range(pa, pb):
                if mask[p] != 0:
                    acc += gz[k * Pz + p] * xz[taps[q] + np.uint64(p)]
            part[piece, kbase + k, q] += acc


@njit(cache=True)
def _add_lanes(partv, part, piece, kbase, Kg, Q):
    # part[piece, kbase + k, q] += the lane sum of partv[k, q]; partv back to zeros.
    for k in range(Kg):
        for q in range(Q):
            total = partv[k, q, 0]
            for lane in range(1, LANES):
                total += partv[k, q, lane]
            part[piece, kbase + k, q] += total
    partv[:] = 0


@njit(parallel=True, fastmath=FM, cache=True)
def conv_dw_pxw(x, g, part, dbpart, nband, taps, mask, grid, G, OH, OW, nbuf, kb, qb,
                chunk):
    # Partial sums: part[piece] (K, Cg*R*S) of dw and dbpart[piece] (K,) float64 of db,
    # piece by piece over (sample, band of pixels) items, `chunk` samples at a time (one
    # band: all its pixels; several bands: one item at a time), summed in vectors in
    # partv (Kpad, Qpad, LANES) and added to part per group. Per sample and group: x
    # placed by grid into xz[m] (Cg, Hz, Wz) (nbuf elements, zero tail) and g onto the
    # same grid in gz[m] (Kpad, Pz): row k, pixel oh*Wz + ow, zero at ow >= OW, past
    # OH*Wz and in the rows past Kg. taps (Qpad,) uint64 tap offsets into xz; mask
    # (Pz,): 1 where a pixel exists. (kb, qb): the tile shape, one of PXW_SHAPES.
    N, K = g.shape[0], g.shape[1]
    Cg = x.shape[1] // G
    Kg = K // G
    Q = part.shape[2]
    npiece = part.shape[0]
    Wz = grid.Wz
    Pz = mask.shape[0]
    nvec = Pz // LANES
    Kpad = (Kg + kb - 1) // kb * kb
    Qpad = taps.shape[0]
    items = N * nband
    per = chunk if nband == 1 else 1
    for piece in prange(npiece):
        part[piece] = 0
        dbpart[piece] = 0
        xz = np.empty(per * nbuf, dtype=x.dtype)
        gz = np.zeros(per * Kpad * Pz, dtype=g.dtype)
        partv = np.zeros((Kpad, Qpad, LANES), dtype=part.dtype)
        for m in range(per):
            xz[m * nbuf + Cg * grid.Hz * Wz : (m + 1) * nbuf] = 0
        i0, i1 = piece * items // npiece, (piece + 1) * items // npiece
        for c0 in range(i0, i1, per):
            nsamp = min(per, i1 - c0)
            band = c0 % nband
            pa = band * nvec // nband * LANES
            pb = (band + 1) * nvec // nband * LANES
            for grp in range(G):
                exact = False
                for m in range(nsamp):
                    n = (c0 + m) // nband
                    xm = xz[m * nbuf : (m + 1) * nbuf]
                    _place(x, n, grp * Cg, Cg, xm, grid, 0, grid.Hz)
                    exact = exact or not _finite(xm, Cg * grid.Hz * Wz)
                    for k in range(Kg):
                        kk = grp * Kg + k
                        acc = 0.0
                        o = (m * Kpad + k) * Pz
                        for oh in range(pa // Wz, min(OH, (pb + Wz - 1) // Wz)):
                            row = g[n, kk, oh * OW : (oh + 1) * OW]
                            gz[o + oh * Wz : o + oh * Wz + OW] = row
                            lo = max(0, pa - oh * Wz)
                            hi = min(OW, pb - oh * Wz)
                            for ow in range(lo, hi):
                                acc += row[ow]
                        dbpart[piece, kk] += acc
                if exact:
                    # A lane past a row's end reads x too (times a zero gradient): with
                    # NaN or inf in x that would reach dw entries PyTorch's never see,
                    # so such a chunk takes the exact scalar loop.
                    for m in range(nsamp):
                        _exact_pxw(xz[m * nbuf : (m + 1) * nbuf], mask,
                                   gz[m * Kpad * Pz : (m + 1) * Kpad * Pz], Pz, taps, pa,
                                   pb, part, piece, grp * Kg, Kg, Q)
                    continue
                for k0 in range(0, Kg, kb):
                    go = np.uint64(k0 * Pz)
                    for q0 in range(0, Qpad, qb):
                        if kb == 4:
                            _tile_pxw(4, 4, xz, nbuf, gz, Kpad * Pz, nsamp, go, taps, q0,
                                      pa, pb, Pz, partv, k0)
                        else:
                            _tile_pxw(1, 9, xz, nbuf, gz, Kpad * Pz, nsamp, go, taps, q0,
                                      pa, pb, Pz, partv, k0)
                if G > 1:
                    _add_lanes(partv, part, piece, grp * Kg, Kg, Q)
        if G == 1:
            _add_lanes(partv, part, piece, 0, Kg, Q)


PXW_CHUNK_BYTES = 1 << 15  # x and g of one chunk of samples: within L1


def pxw_backward_weights(geo, g, x, dw, db):
    grid = forward_grid(geo)
    Cg, Kg = geo.C // geo.G, geo.K // geo.G
    kb, qb = PXW_SHAPES[1] if Kg == 1 else PXW_SHAPES[0]
    taps = _tap_offsets(Cg, geo.R, geo.S, geo.dh, geo.dw, grid.Hz, grid.Wz, qb)
    Pz = -(-geo.OH * grid.Wz // LANES) * LANES
    mask = np.zeros(Pz, dtype=x.dtype)
    mask[: geo.OH * grid.Wz].reshape(geo.OH, grid.Wz)[:, : geo.OW] = 1
    nbuf = max(Cg * grid.Hz * grid.Wz, int(taps.max()) + Pz)
    per_sample = (nbuf + -(-Kg // kb) * kb * Pz) * x.itemsize
    chunk = max(1, PXW_CHUNK_BYTES // per_sample)
    _backward_weights(conv_dw_pxw, geo, g, x, dw, db, taps, mask, grid, geo.G, geo.OH,
                      geo.OW, nbuf, kb, qb, chunk)


# ----------------------------------------------------------------------------
# version "sv": stride 1, the samples of a block of LANES are the vector lanes

# Tiles (KX output channels x TP pixels of one output row, LANES samples each) of forward
# and backward-data, and (KB output channels x QB rows q) of backward-weights; SV_TILE
# accumulators on the stack hold the largest.
SV_SHAPES = ((4, 5), (3, 7), (6, 4))
# a row narrower than every tile's TP has no piece that fits in it (a piece starts at
# OW - TP): _applies refuses sv there
SV_MIN_WIDTH = min(TP for _, TP in SV_SHAPES)
SVW_SHAPES = ((4, 5), (3, 5))
SV_TILE = 24 * LANES


@njit(cache=True)
def _interleave(src, n0, nb, c0, nc, buf, grid, i0, i1):
    # buf[((c*Hz + i)*Wz + j)*LANES + l] = src[n0 + l, c0 + c, i - oh0, j - ow0] (zero for
    # l >= nb) for the grid rows i in [i0, i1) that hold a source row; grid has stride 1
    # and src is (N, C, A, B). Positions that hold no source pixel are left as they are.
    # Each row goes LANES columns at a time through a register transpose; a read window
    # that would leave src moves back (and its first columns are dropped).
    Hz, Wz, _, _, oh0, ow0 = grid
    C, A, B = src.shape[1], src.shape[2], src.shape[3]
    sf = src.reshape(-1)
    size = sf.size
    sld = C * A * B  # from one sample to the next
    b0, b1 = max(0, -ow0), min(B, Wz - ow0)
    for c in range(nc):
        for i in range(max(i0, oh0), min(i1, oh0 + A)):
            rowbase = ((n0 * C + c0 + c) * A + i - oh0) * B
            for bb in range(b0, b1, LANES):
                n = min(LANES, b1 - bb)
                s = rowbase + bb
                shift = max(0, s + (nb - 1) * sld + LANES - size)
                d = ((c * Hz + i) * Wz + bb + ow0) * LANES
                if shift <= s:
                    transpose_block(buf, d, LANES, sf, s - shift, sld, nb, shift, n)
                else:  # an array too small for one window
                    for j in range(n):
                        for lane in range(LANES):
                            v = sf[s + lane * sld + j] if lane < nb else 0
                            buf[d + j * LANES + lane] = v


@njit(cache=True)
def _deinterleave(yi, pa, pb, dst, n0, nb, k0, nk, P, Kt):
    # dst[n0 + l, k0 + k, p] = yi[(k*(pb - pa) + p - pa)*LANES + l] for l < nb, k < nk and
    # p in [pa, pb); dst is (N, Kt, P) flat. Blocks of LANES pixels are transposed in
    # registers, the last one moved back to end at pb (its first pixels written twice).
    n = pb - pa
    for k in range(nk):
        s0 = k * n * LANES
        d0 = (n0 * Kt + k0 + k) * P + pa
        if n >= LANES:
            for p in range(0, n, LANES):
                q = min(p, n - LANES)
                transpose_block(dst, d0 + q, Kt * P, yi, s0 + q * LANES, LANES, LANES, 0, nb)
        else:
            for p in range(n):
                for lane in range(nb):
                    dst[d0 + lane * Kt * P + p] = yi[s0 + p * LANES + lane]


def _make_tile_sv(KX, TP):
    # One tile function per shape, KX and TP closure constants (no literal dispatch).
    @njit(fastmath=FM)
    def _tile_sv(xi, o0, wpk, blk, off, Cq, R, S, r0, r1, yi, yo, ystride, bias, kbase,
                 nk):
        # acc[i, j, l] = sum over q = (c, r, s), r in [r0, r1) (the taps that reach rows
        # holding data), of wpk[blk, q, i] * xi[o0 + off[q] + j*LANES + l]: KX output channels
        # x TP neighbouring pixels x LANES samples, the pixels' samples one contiguous run per
        # q (TP vector loads, KX broadcasts, KX*TP FMAs). Channel i < nk is stored with its
        # bias at yi[yo + i*ystride + j*LANES + l]. KX and TP are compile-time constants.
        wide_vectors()
        acc = stack_array(yi, SV_TILE)
        for i in range(KX * TP * LANES):
            acc[i] = 0
        for c in range(Cq):
            for r in range(r0, r1):
                qa = (c * R + r) * S
                for q in range(qa, qa + S):
                    o = o0 + off[q]
                    for j in range(TP * LANES):
                        xv = xi[o + np.uint64(j)]
                        for i in range(KX):
                            acc[i * TP * LANES + j] += wpk[blk, q, i] * xv
        for i in range(KX):
            if i < nk:
                bk = bias[kbase + i]
                for j in range(TP * LANES):
                    yi[yo + np.uint64(i * ystride + j)] = acc[i * TP * LANES + j] + bk
    return _tile_sv


_tile_sv_0, _tile_sv_1, _tile_sv_2 = (_make_tile_sv(KX, TP) for KX, TP in SV_SHAPES)


def _make_sv_piece(SHAPE):
    # The forward / backward-data piece for tile shape SV_SHAPES[SHAPE], (KX, TP): one
    # compiled function per shape (SHAPE, KX, TP closure constants; Numba prunes the other
    # shapes' branches), so a network compiles only the tiles it uses.
    KX, TP = SV_SHAPES[SHAPE]

    @njit(fastmath=FM, cache=True)
    def _sv_piece(piece, npiece, args):
        # y (N, G*Kg, OH*OW) flat = stride-1 direct convolution of src (N, G*Cq, A, B)
        # placed by grid, with packed weights wpk (G*nkb, Cq*R*S, KX) and taps off (uint64,
        # in elements of the interleaved buffer). Items are (block of LANES samples, band of
        # output rows); piece `piece` of npiece (one per thread, run_pieces) takes a run of
        # items with its buffers allocated once: xi (Cq, Hz, Wz, LANES), zero where no
        # source pixel lands, and yi (Kg, band rows, OW, LANES). Output row oh reads the
        # kernel rows [rlo[oh], rhi[oh]).
        src, wpk, bias, yf, off, rlo, rhi, G, Kg, OH, OW, R, S, nband = args[:14]
        grid = Grid(*args[14:])
        N = src.shape[0]
        items = (N + LANES - 1) // LANES * nband
        i0, i1 = piece * items // npiece, (piece + 1) * items // npiece
        Cq = src.shape[1] // G
        Kt = G * Kg
        Hz, Wz = grid.Hz, grid.Wz
        nkb = (Kg + KX - 1) // KX
        ext = np.int64(off[off.shape[0] - 1] // np.uint64(LANES)) // Wz % Hz  # rows a tap reaches
        pieces_per_row = (OW + TP - 1) // TP
        band_rows = (OH + nband - 1) // nband
        xi = np.zeros(Cq * Hz * Wz * LANES, dtype=src.dtype)
        yi = np.empty(Kg * band_rows * OW * LANES, dtype=yf.dtype)
        for item in range(i0, i1):
            n0 = item // nband * LANES
            nb = min(LANES, N - n0)
            band = item % nband
            h0, h1 = band * OH // nband, (band + 1) * OH // nband
            ys = (h1 - h0) * OW * LANES  # one channel of yi
            for g in range(G):
                _interleave(src, n0, nb, g * Cq, Cq, xi, grid, h0, h1 + ext)
                for kb in range(nkb):
                    blk, k0 = g * nkb + kb, kb * KX
                    nk = min(KX, Kg - k0)
                    for oh in range(h0, h1):
                        for t in range(pieces_per_row):
                            ow0 = min(t * TP, OW - TP)  # the last piece ends at OW
                            o0 = np.uint64((oh * Wz + ow0) * LANES)
                            yo = np.uint64(k0 * ys + ((oh - h0) * OW + ow0) * LANES)
                            if SHAPE == 0:
                                _tile_sv_0(xi, o0, wpk, blk, off, Cq, R, S, rlo[oh],
                                         rhi[oh], yi, yo, ys, bias, g * Kg + k0, nk)
                            elif SHAPE == 1:
                                _tile_sv_1(xi, o0, wpk, blk, off, Cq, R, S, rlo[oh],
                                         rhi[oh], yi, yo, ys, bias, g * Kg + k0, nk)
                            else:
                                _tile_sv_2(xi, o0, wpk, blk, off, Cq, R, S, rlo[oh],
                                         rhi[oh], yi, yo, ys, bias, g * Kg + k0, nk)
                _deinterleave(yi, h0 * OW, h1 * OW, yf, n0, nb, g * Kg, Kg, OH * OW, Kt)

    return _sv_piece


SV_PIECES = tuple(_make_sv_piece(shape) for shape in range(len(SV_SHAPES)))


@lru_cache(maxsize=64)
def _sv_offsets(Cq, R, S, dh, dw, grid, multiple=1):
    # (Cq*R*S,) uint64: where tap q = (c, r, s) starts in the interleaved (Cq, Hz, Wz, LANES),
    # the last repeated up to a multiple of `multiple` entries. Shared: never written.
    return _tap_offsets(Cq, R, S, dh, dw, grid.Hz, grid.Wz, multiple) * np.uint64(LANES)


@lru_cache(maxsize=64)
def _sv_rows(OH, R, dh, grid, A):
    # (rlo, rhi) (OH,) int64: the kernel rows whose grid row oh + r*dh holds a source row
    # (rows of padding only add zeros: backward-data of a 5x5 layer skips 29% of its taps)
    oh = np.arange(OH)[:, None]
    i = oh + np.arange(R)[None, :] * dh
    data = (i >= grid.oh0) & (i < grid.oh0 + A)
    rlo = np.where(data.any(1), data.argmax(1), 0)
    rhi = np.where(data.any(1), R - data[:, ::-1].argmax(1), 0)
    return rlo.astype(np.int64), rhi.astype(np.int64)


def _sv_use(Kout_g, OW, shape):
    # The share of a tile shape's lanes that compute wanted outputs (channel blocks and
    # row pieces rounded up); 0 where a row is narrower than the tile.
    KX, TP = shape
    if OW < TP:
        return 0.0
    return _lane_use(Kout_g, KX) * OW / (-(-OW // TP) * TP)


@lru_cache(maxsize=64)
def _sv_shape(Kout_g, OW):
    # The index in SV_SHAPES of the tile that wastes the fewest lanes (the first on ties).
    uses = [_sv_use(Kout_g, OW, shape) for shape in SV_SHAPES]
    return int(np.argmax(uses))


def _run_sv(src, w, bias, yf, G, Kout_g, Cq, R, S, dil, grid, OH, OW, transpose):
    shape = _sv_shape(Kout_g, OW)
    wpk = _packed(w, G, Kout_g, Cq, R, S, SV_SHAPES[shape][0], transpose)
    rlo, rhi = _sv_rows(OH, R, dil[0], grid, src.shape[2])
    nblk = -(-src.shape[0] // LANES)
    threads = numba.get_num_threads()
    nband = max(1, min(OH, -(-4 * threads // nblk)))
    # (the piece count comes from here: get_num_threads inside the kernel stops its caching)
    args = (src, wpk, bias, yf, _sv_offsets(Cq, R, S, *dil, grid), rlo, rhi, G, Kout_g,
            OH, OW, R, S, nband, *grid)
    run_pieces(SV_PIECES[shape], min(threads, nblk * nband), args)


def _make_tile_svw(KB, QB):
    # One tile function per shape, KB and QB closure constants (no literal dispatch).
    @njit(fastmath=FM)
    def _tile_svw(xi, xoff, gi, go, gstride, h0, h1, OW, Wz, partv, k0, q0):
        # partv[k0 + i, q0 + j, l] += sum over the output pixels (oh, ow), oh in [h0, h1), of
        # gi[go + i*gstride + (oh*OW + ow)*LANES + l] * xi[xoff[q0 + j] + (oh*Wz + ow)*LANES + l]:
        # KB output channels x QB rows q, lane l a sample; per pixel KB + QB vector loads and
        # KB*QB FMAs. The sums stay vectors (a horizontal sum at the end of the piece). KB and
        # QB are compile-time constants.
        wide_vectors()
        acc = stack_array(partv, SV_TILE)
        for i in range(KB):
            for j in range(QB):
                for lane in range(LANES):
                    acc[(i * QB + j) * LANES + lane] = partv[k0 + i, q0 + j, lane]
        for oh in range(h0, h1):
            gr = go + np.uint64(oh * OW * LANES)
            xr = np.uint64(oh * Wz * LANES)
            for ow in range(OW):
                pg = gr + np.uint64(ow * LANES)
                pxo = xr + np.uint64(ow * LANES)
                for j in range(QB):
                    xo = xoff[q0 + j] + pxo
                    for i in range(KB):
                        gg = pg + np.uint64(i * gstride)
                        a = (i * QB + j) * LANES
                        for lane in range(LANES):
                            acc[a + lane] += gi[gg + np.uint64(lane)] * xi[xo + np.uint64(lane)]
        for i in range(KB):
            for j in range(QB):
                for lane in range(LANES):
                    partv[k0 + i, q0 + j, lane] = acc[(i * QB + j) * LANES + lane]
    return _tile_svw


_tile_svw_0, _tile_svw_1 = (_make_tile_svw(KB, QB) for KB, QB in SVW_SHAPES)


def _make_svw_piece(SHAPE):
    # The backward-weights piece for tile shape SVW_SHAPES[SHAPE], (KB, QB), as
    # _make_sv_piece.
    KB, QB = SVW_SHAPES[SHAPE]

    @njit(fastmath=FM, cache=True)
    def _svw_piece(piece, npiece, args):
        # Partial sums: part[piece] (K, Cg*R*S) of dw and dbpart[piece] (K,) float64 of db,
        # piece by piece over (block of LANES samples, band of output rows) items. Per item
        # and group, x is interleaved onto the padded grid in xi (Cg, Hz, Wz, LANES) and g in
        # gi (Kpad, OH, OW, LANES) (rows past Kg zero); the tile sums go to partv (Kpad, Qpad,
        # LANES) and their lanes are added up per group (G > 1) or at the piece's end.
        # xoff (Qpad,) uint64: tap offsets into xi, the last repeated to a multiple of QB.
        x, g, part, dbpart, nband, xoff, G, OH, OW = args[:9]
        grid = Grid(*args[9:])
        N, Kt = g.shape[0], g.shape[1]
        Cg = x.shape[1] // G
        Kg = Kt // G
        Q = part.shape[2]
        Hz, Wz = grid.Hz, grid.Wz
        Qpad = xoff.shape[0]
        Kpad = (Kg + KB - 1) // KB * KB
        P = OH * OW
        items = (N + LANES - 1) // LANES * nband
        ext = np.int64(xoff[Qpad - 1] // np.uint64(LANES)) // Wz % Hz
        ggrid = Grid(OH, OW, 1, 1, 0, 0)
        g4 = g.reshape(N, Kt, OH, OW)
        part[piece] = 0
        dbpart[piece] = 0
        xi = np.zeros(Cg * Hz * Wz * LANES, dtype=x.dtype)
        gi = np.zeros(Kpad * P * LANES, dtype=g.dtype)
        partv = np.zeros((Kpad, Qpad, LANES), dtype=part.dtype)
        for item in range(piece * items // npiece, (piece + 1) * items // npiece):
            n0 = item // nband * LANES
            nb = min(LANES, N - n0)
            band = item % nband
            h0, h1 = band * OH // nband, (band + 1) * OH // nband
            for grp in range(G):
                _interleave(x, n0, nb, grp * Cg, Cg, xi, grid, h0, h1 + ext)
                _interleave(g4, n0, nb, grp * Kg, Kg, gi, ggrid, h0, h1)
                for k in range(Kg):
                    dbpart[piece, grp * Kg + k] += _row_sum(
                        gi, np.uint64((k * P + h0 * OW) * LANES), (h1 - h0) * OW * LANES)
                for k0 in range(0, Kg, KB):
                    go = np.uint64(k0 * P * LANES)
                    for q0 in range(0, Qpad, QB):
                        if SHAPE == 0:
                            _tile_svw_0(xi, xoff, gi, go, P * LANES, h0, h1, OW, Wz,
                                      partv, k0, q0)
                        else:
                            _tile_svw_1(xi, xoff, gi, go, P * LANES, h0, h1, OW, Wz,
                                      partv, k0, q0)
                if G > 1:
                    _add_lanes(partv, part, piece, grp * Kg, Kg, Q)
        if G == 1:  # (kbase as an int64: a literal 0 would compile a second _add_lanes)
            _add_lanes(partv, part, piece, np.int64(0), Kg, Q)

    return _svw_piece


SVW_PIECES = tuple(_make_svw_piece(shape) for shape in range(len(SVW_SHAPES)))


@lru_cache(maxsize=64)
def _svw_shape(Kg, Q):
    # The index in SVW_SHAPES that wastes the fewest lanes (channel and q blocks rounded up).
    uses = [_lane_use(Kg, KB) * _lane_use(Q, QB) for KB, QB in SVW_SHAPES]
    return int(np.argmax(uses))


def sv_backward_weights(geo, g, x, dw, db):
    grid = forward_grid(geo)
    Cg, Kg = geo.C // geo.G, geo.K // geo.G
    Q = Cg * geo.R * geo.S
    shape = _svw_shape(Kg, Q)
    QB = SVW_SHAPES[shape][1]
    xoff = _sv_offsets(Cg, geo.R, geo.S, geo.dh, geo.dw, grid, QB)
    threads = numba.get_num_threads()
    nblk = -(-geo.N // LANES)
    nband = 1 if nblk >= threads else min(geo.OH, -(-threads // nblk))
    npiece = min(threads, nblk * nband)
    part = np.empty((npiece, geo.K, Q), dtype=dw.dtype)
    dbpart = np.empty((npiece, geo.K), dtype=np.float64)
    args = (x, g.reshape(geo.N, geo.K, -1), part, dbpart, nband, xoff, geo.G, geo.OH, geo.OW,
            *grid)
    run_pieces(SVW_PIECES[shape], npiece, args)
    has_bias = db is not None
    reduce_pieces(part, dbpart, dw, db if has_bias else dbpart[0], has_bias)


# ----------------------------------------------------------------------------
# version "wg": forward / backward-data for 3x3 stride 1, Winograd F(2x2, 3x3)

# Lavin & Gray 2016: a 2x2 output tile Y = A^T [ (G g G^T) . (B^T d B) ] A from the tile's
# 4x4 input patch d (stride 2), 16 products per channel pair instead of 36. A tile of the
# 16 GEMMs is WG_KX output channels x WG_UB tiles (2 vectors, 16 accumulators); a block
# of WG_UB tiles is transformed into V, multiplied (M), and transformed back into a
# per-task buffer while it is still in L1/L2.
WG_UB = 2 * LANES
WG_KX = 8
WG_TILE = WG_KX * WG_UB  # accumulators of one GEMM tile
WG_PATCH = 16 * WG_UB  # one channel's 16 transformed rows of a block
WG_ROWS = 8 * WG_UB  # the 8 half-transformed rows of the inverse transform
WG_OUT = 4 * WG_UB  # its 4 output rows
# V's rows (one per tap t) are WG_VPAD elements longer than a multiple of 4 KB, so the
# transform's 16 stores do not alias in the L1 (4 KB aliasing: 3.2 -> 2.1 us per block).
WG_VPAD = 48
WG_BYTES = 1 << 20  # a task's Z and Yb (float32): within L2
# Reduced and output channels from which wg is chosen. wg against px per op (forward,
# backward-data), N128 28x28, one process taking turns: C16 K16 0.88x, 0.89x; C16 K32 0.96x,
# 0.96x; C32 K16 1.07x, 1.00x; C24 K24 1.02x, 1.04x; C16 K64 1.12x, 1.13x; C64 K16 1.11x,
# 0.82x; C32 K32 1.18x, 1.20x; C32 K64 1.36x, 1.39x. 32 both ways is the simplest rule that
# picks no loser.
WG_MIN_CHANNELS = 32


# wg's G (the points 0, 1, -1 and infinity): U = G g G^T, through winograd_weights
WG_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])


@njit(fastmath={"reassoc", "contract"}, cache=True)  # reassoc: the check's sum vectorises
def _wg_place(src, n, Z, Up, th0, nth, Wh, oh0, ow0):
    # Z[c][a][par][(th - th0)*Wh + j] = xp[2*th + a][2*j + par] for a, par in {0, 1} and the
    # nth + 1 tile rows th from th0, xp = src[n] placed at (oh0, ow0) in zeros, zero after
    # them: the even and odd rows and columns of the input as four planes, so that the 4x4
    # patch of tile u is planes (a % 2, b % 2) at u + (a // 2)*Wh + b // 2 (patch rows 2
    # and 3 are rows 0 and 1 of the next tile row), contiguous in u for vector loads (a
    # plane per patch row instead: one thread, N128 C32 28x28 forward 0.78-0.81 -> 0.75 of
    # px's time). Returns the sum of what it placed: not finite when src[n] holds NaN or
    # inf there (or when the sum overflows; px then redoes a sample that was fine).
    Cq, A, B = src.shape[1], src.shape[2], src.shape[3]
    sf = src.reshape(-1)
    # Columns j that take both parities from the source: 0 <= 2j - ow0, 2j + 1 - ow0 < B.
    j0 = min(Wh, max(0, (ow0 + 1) // 2))
    j1 = min(Wh, max(j0, (B + ow0) // 2))
    zero = src.dtype.type(0)
    check = zero
    for c in range(Cq):
        for a in range(2):
            ze = np.uint64((c * 2 + a) * 2 * Up)
            zo = ze + np.uint64(Up)
            for th in range(nth + 1):
                ia = 2 * (th0 + th) + a - oh0
                row = np.uint64(th * Wh)
                if ia < 0 or ia >= A:
                    for j in range(Wh):
                        Z[ze + row + np.uint64(j)] = 0
                        Z[zo + row + np.uint64(j)] = 0
                    continue
                s0 = ((n * Cq + c) * A + ia) * B
                for j in range(Wh - (j1 - j0)):  # the edge columns, tested one by one
                    jj = j if j < j0 else j + j1 - j0
                    for par in range(2):
                        ib = 2 * jj + par - ow0
                        v = sf[s0 + ib] if 0 <= ib < B else zero
                        Z[ze + np.uint64(par * Up) + row + np.uint64(jj)] = v
                        check += v
                sb = np.uint64(s0 + 2 * j0 - ow0)
                de, do = ze + row + np.uint64(j0), zo + row + np.uint64(j0)
                for j in range(j1 - j0):
                    ve, vo = sf[sb + np.uint64(2 * j)], sf[sb + np.uint64(2 * j + 1)]
                    Z[de + np.uint64(j)] = ve
                    Z[do + np.uint64(j)] = vo
                    check += ve + vo
            for u in range((nth + 1) * Wh, Up):
                Z[ze + np.uint64(u)] = 0
                Z[zo + np.uint64(u)] = 0
    return check


@njit(fastmath=FM, cache=True)
def _wg_in(Z, Up, Wh, V, VS, Cq, u0):
    # V[t*VS + c*WG_UB + j] = (B^T d B)[t] of tile u0 + j, channel c, from Z (see _wg_place),
    # B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]: the patch's
    # columns combined straight from Z into a stack buffer, then its rows into V.
    # Unsigned indices throughout: a signed one makes LLVM gather (Numba's negative-index
    # wrap), and the stack buffer tells it that nothing aliases.
    wide_vectors()
    e = stack_array(V, WG_PATCH)
    z1, z2, z3 = np.uint64(2 * Up), np.uint64(Wh), np.uint64(2 * Up + Wh)
    v1, v2, v3 = np.uint64(VS), np.uint64(2 * VS), np.uint64(3 * VS)
    e1, e2, e3 = np.uint64(WG_UB), np.uint64(2 * WG_UB), np.uint64(3 * WG_UB)
    f1, f2, f3 = np.uint64(4 * WG_UB), np.uint64(8 * WG_UB), np.uint64(12 * WG_UB)
    for c in range(Cq):
        for b in range(4):
            # patch column b: even (b = 0, 2) or odd columns, one tile on for b >= 2
            zc = np.uint64(c * 4 * Up + u0 + (b % 2) * Up + b // 2)
            eb = np.uint64(b * WG_UB)
            for j in range(WG_UB):
                zj = zc + np.uint64(j)
                d0, d1, d2, d3 = Z[zj], Z[zj + z1], Z[zj + z2], Z[zj + z3]
                ej = eb + np.uint64(j)
                e[ej] = d0 - d2
                e[ej + f1] = d1 + d2
                e[ej + f2] = d2 - d1
                e[ej + f3] = d1 - d3
        for a in range(4):
            vb = np.uint64(4 * a * VS + c * WG_UB)
            ea = np.uint64(4 * a * WG_UB)
            for j in range(WG_UB):
                ej = ea + np.uint64(j)
                r0, r1, r2, r3 = e[ej], e[ej + e1], e[ej + e2], e[ej + e3]
                v = vb + np.uint64(j)
                V[v] = r0 - r2
                V[v + v1] = r1 + r2
                V[v + v2] = r2 - r1
                V[v + v3] = r1 - r3


@njit(fastmath=FM, cache=True)
def _wg_gemm(V, vo, U, t, kb, Cq, M, mo):
    # M[mo + i*WG_UB + j] = sum_c U[t, kb, c, i] * V[vo + c*WG_UB + j]: per c 2 vector
    # loads, WG_KX broadcasts, 16 FMAs.
    wide_vectors()
    acc = stack_array(M, WG_TILE)
    for i in range(WG_TILE):
        acc[i] = 0
    for c in range(Cq):
        base = vo + np.uint64(c * WG_UB)
        for j in range(WG_UB):
            xv = V[base + np.uint64(j)]
            for i in range(WG_KX):
                acc[i * WG_UB + j] += U[t, kb, c, i] * xv
    for i in range(WG_TILE):
        M[mo + np.uint64(i)] = acc[i]


@njit(fastmath=FM, cache=True)
def _wg_out(M, mo, Yb, k0, nk, Uy, u0):
    # Yb[((k0 + i)*4 + q)*Uy + u0 + j] = (A^T m A)[q] with m[t] = M[mo + (t*WG_KX + i)*WG_UB
    # + j], A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]; through stack buffers (no aliasing).
    wide_vectors()
    m = stack_array(M, WG_PATCH)
    r = stack_array(M, WG_ROWS)
    o = stack_array(M, WG_OUT)
    for i in range(nk):
        for t in range(16):
            mb = mo + np.uint64((t * WG_KX + i) * WG_UB)
            for j in range(WG_UB):
                m[t * WG_UB + j] = M[mb + np.uint64(j)]
        for b in range(4):
            for j in range(WG_UB):
                m0, m1 = m[b * WG_UB + j], m[(4 + b) * WG_UB + j]
                m2, m3 = m[(8 + b) * WG_UB + j], m[(12 + b) * WG_UB + j]
                r[b * WG_UB + j] = m0 + m1 + m2
                r[(4 + b) * WG_UB + j] = m1 - m2 - m3
        for a in range(2):
            for j in range(WG_UB):
                r0, r1 = r[4 * a * WG_UB + j], r[(4 * a + 1) * WG_UB + j]
                r2, r3 = r[(4 * a + 2) * WG_UB + j], r[(4 * a + 3) * WG_UB + j]
                o[2 * a * WG_UB + j] = r0 + r1 + r2
                o[(2 * a + 1) * WG_UB + j] = r1 - r2 - r3
        for q in range(4):
            d = np.uint64(((k0 + i) * 4 + q) * Uy + u0)
            for j in range(WG_UB):
                Yb[d + np.uint64(j)] = o[q * WG_UB + j]


@njit(fastmath=FM, cache=True)
def _wg_copy(Yb, Uy, bias, yf, n, K, OH, OW, th0, nth, Wh):
    # y[n, k, 2*th + a, 2*tw + b] = Yb[(k*4 + 2a + b)*Uy + (th - th0)*Wh + tw] + bias[k] for
    # the band's output rows (the two parities of a row interleaved).
    uy = np.uint64(Uy)
    for k in range(K):
        bk = bias[k]
        for oh in range(2 * th0, min(OH, 2 * (th0 + nth))):
            th, a = oh // 2 - th0, oh % 2
            e = np.uint64((k * 4 + 2 * a) * Uy + th * Wh)
            d = np.uint64(((n * K + k) * OH + oh) * OW)
            for tw in range(OW // 2):
                yf[d + np.uint64(2 * tw)] = Yb[e + np.uint64(tw)] + bk
                yf[d + np.uint64(2 * tw + 1)] = Yb[e + uy + np.uint64(tw)] + bk
            if OW % 2:
                yf[d + np.uint64(OW - 1)] = Yb[e + np.uint64(OW // 2)] + bk


@njit(parallel=True, fastmath=FM, cache=True)
def conv_wg(src, U, bias, yf, Ko, OH, OW, oh0, ow0, nband, bad, m):
    # y (N, Ko, OH, OW) flat = the 3x3 stride-1 convolution of src (N, Cq, A, B) placed at
    # (oh0, ow0) in zeros, by Winograd F(m x m, 3x3), m = 2 (wg) or 4 (wg4), with T = (m +
    # 2)^2 taps of transformed weights U (T, nkb, Cq, WG_KX) (winograd_weights). A
    # task is one sample and one band of its tile rows; per block of WG_UB tiles: V (T taps
    # x Cq x WG_UB), M (nkb x T taps x WG_TILE; the taps outermost, so a tap's V stays in
    # L1 across the channel blocks), then the inverse transform into Yb (Ko x m*m x the
    # band's tiles), copied to y. bad[n] = 1 where src[n] holds NaN or inf (the caller
    # recomputes that sample exactly).
    N, Cq = src.shape[0], src.shape[1]
    TH, TW = -(-OH // m), -(-OW // m)
    Wh = TW + 1  # tile columns on the planes: the last one is never output
    tb = -(-TH // nband)
    nblk = -(-(tb * Wh) // WG_UB)
    Uy = nblk * WG_UB
    Up = Uy + Wh + 1  # planes are read a tile row and a tile past the band's last block
    T, nkb = U.shape[0], U.shape[1]
    VS = Cq * WG_UB + WG_VPAD
    bad[:] = 0
    for task in prange(N * nband):
        n, band = task // nband, task % nband
        th0 = band * tb
        nth = min(tb, TH - th0)
        if nth <= 0:
            continue
        Z = np.empty(Cq * m * m * Up, dtype=src.dtype)
        V = np.empty(T * VS, dtype=src.dtype)
        M = np.empty(nkb * T * WG_TILE, dtype=src.dtype)
        Yb = np.empty(Ko * m * m * Uy, dtype=src.dtype)
        if m == 4:
            check = _wg4_place(src, n, Z, Up, th0, nth, Wh, oh0, ow0)
        else:
            check = _wg_place(src, n, Z, Up, th0, nth, Wh, oh0, ow0)
        if check - check != 0:
            bad[n] = 1
        for blk in range(-(-(nth * Wh) // WG_UB)):
            u0 = blk * WG_UB
            if m == 4:
                _wg4_in(Z, Up, Wh, V, VS, Cq, u0)
            else:
                _wg_in(Z, Up, Wh, V, VS, Cq, u0)
            for t in range(T):
                for kb in range(nkb):
                    _wg_gemm(V, np.uint64(t * VS), U, t, kb, Cq, M,
                             np.uint64((kb * T + t) * WG_TILE))
            for kb in range(nkb):
                mo, nk = np.uint64(kb * T * WG_TILE), min(WG_KX, Ko - kb * WG_KX)
                if m == 4:
                    _wg4_out(M, mo, Yb, kb * WG_KX, nk, Uy, u0)
                else:
                    _wg_out(M, mo, Yb, kb * WG_KX, nk, Uy, u0)
        if m == 4:
            _wg4_copy(Yb, Uy, bias, yf, n, Ko, OH, OW, th0, nth, Wh)
        else:
            _wg_copy(Yb, Uy, bias, yf, n, Ko, OH, OW, th0, nth, Wh)


# ----------------------------------------------------------------------------
# version "wg4": forward / backward-data for 3x3 stride 1, Winograd F(4x4, 3x3)

# A 4x4 output tile from its 6x6 input patch (stride 4): 36 products per channel pair per
# 16 outputs (2.25 per output against wg's 4 and the direct sum's 9). The interpolation
# points are 0, 1, -1, 1/2, -2 and infinity. Their float32 error, simulated in NumPy on
# N8 C32 28x28 K64 (random normal x and g, He-scaled w, against the float64 direct sum;
# max of |e| / (|ref| + rms), rms of e / rms), forward and backward-data: 8.2e-6 / 8.7e-7
# and 8.2e-6 / 1.1e-6; the usual 0, +-1, +-2: 2.5e-5 / 1.3e-6 and 3.0e-5 / 1.8e-6; 0,
# +-1, +-1/2: 1.7e-5 / 1.3e-6 and 2.4e-5 / 1.8e-6; F(3x3, 3x3) with 0, +-1, 2: 7.2e-6 /
# 7.1e-7 (wg's F(2x2): 1.0e-6 / 2.0e-7; the direct sum 6.4e-7 / 1.2e-7). B^T's row 3 is divided
# by 16 and G's multiplied by 16 (exact in binary), so B^T holds small integers:
#     B^T = [[2, -3, -4, 3, 2, 0], [0, -2, 1, 5, 2, 0], [0, -2, 5, -1, -2, 0],
#            [0, 2, 1, -2, -1, 0], [0, 1, -2, -1, 2, 0], [0, 2, -3, -4, 3, 2]]
#     A^T = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 1/2, -2, 0], [0, 1, 1, 1/4, 4, 0],
#            [0, 1, -1, 1/8, -8, 1]]
# The blocks, the products (_wg_gemm) and the work split are wg's (conv_wg).
WG4_G = np.array([[30, 0, 0], [10, 10, 10], [10, -10, 10], [64, 32, 16], [2, -4, 8],
                  [0, 0, 30]], dtype=np.float64) / 60
# wg4 is chosen over wg (both need WG_MIN_CHANNELS) where a task holds a whole sample (one
# band: a band places one tile row more than it outputs, 4 input rows for wg4 against 2
# for wg) and at least this share of its blocks' lanes hold output tiles (_wg_lane_use).
# wg4 against wg per op (forward, backward-data; one process taking turns, busy machine):
# N128 C32 28x28 K64 (one band, 77% of the lanes) 1.20x, 1.12x; N32 C64 56x56 K64 (2
# bands, 77%) 0.98-1.01x, 1.00-1.01x; N1 C64 56x56 K64 (7 bands, 88%) 0.81x, 0.95x; N128
# C64 14x14 K64 (one band, 50%) 0.74x, 0.73x.
WG4_MIN_LANE_USE = 0.75
WG4_PATCH = 36 * WG_UB  # one channel's 36 transformed rows of a block
WG4_ROWS = 24 * WG_UB  # the 4 x 6 half-transformed rows of the inverse transform
WG4_OUT = 16 * WG_UB  # its 16 output rows


@njit(parallel=True, cache=True)
def winograd_weights(w, U, transpose, Gm):
    # U[t, kb, c, i] = (Gm g Gm^T)[t] (t = T*a + b, T = Gm's rows: 4 for wg, 6 for wg4) for
    # output channel k = kb*WG_KX + i and input channel c (0 past the output channels), with
    # g = w[k, c] (K, Cq, 3, 3), or for backward-data g = w[c, k] flipped (the output
    # channels are w's input channels). In float64: it runs once per call on the weights,
    # one output channel per iteration. Serial, C = K = 256 took 3.5 ms (F(2x2)) and 7.4 ms
    # (F(4x4)); forward + backward-data against the serial loop, one process taking turns,
    # medians of 11: N16 C256 14x14 1.16x, N32 C128 28x28 1.07x, N32 C64 56x56 1.01x, N128
    # C32 28x28 1.02x (/work/scratch/im2col3/wgab.py).
    # U's lanes past the output channels (the last block's) are zeroed here, the rest
    # written once (a zero fill of all of U first was a second 9 MB pass at C = K = 256).
    Cq = U.shape[2]
    Ko = w.shape[1] if transpose else w.shape[0]
    T = Gm.shape[0]
    for k in prange(U.shape[1] * WG_KX):
        kb, i = k // WG_KX, k % WG_KX
        if k >= Ko:
            for t in range(T * T):
                for c in range(Cq):
                    U[t, kb, c, i] = 0
            continue
        gk = np.empty((3, 3))
        tmp = np.empty((T, 3))
        for c in range(Cq):
            for r in range(3):
                for s in range(3):
                    gk[r, s] = w[c, k, 2 - r, 2 - s] if transpose else w[k, c, r, s]
            for a in range(T):
                for s in range(3):
                    tmp[a, s] = Gm[a, 0] * gk[0, s] + Gm[a, 1] * gk[1, s] + Gm[a, 2] * gk[2, s]
            for a in range(T):
                for b in range(T):
                    U[T * a + b, kb, c, i] = (Gm[b, 0] * tmp[a, 0] + Gm[b, 1] * tmp[a, 1]
                                              + Gm[b, 2] * tmp[a, 2])


@njit(fastmath={"reassoc", "contract"}, cache=True)  # reassoc: the check's sum vectorises
def _wg4_place(src, n, Z, Up, th0, nth, Wh, oh0, ow0):
    # Z[c][a][par][(th - th0)*Wh + j] = xp[4*th + a][4*j + par] for a, par in 0..3 and the
    # nth + 1 tile rows th from th0 (xp as in _wg_place): 16 planes per channel, so the
    # 6x6 patch of tile u is planes (a % 4, b % 4) at u + (a // 4)*Wh + b // 4. Returns
    # the sum of what it placed, as _wg_place does.
    Cq, A, B = src.shape[1], src.shape[2], src.shape[3]
    sf = src.reshape(-1)
    # Columns j that take all four phases from the source: 0 <= 4j - ow0, 4j + 3 - ow0 < B.
    j0 = min(Wh, max(0, (ow0 + 3) // 4))
    j1 = min(Wh, max(j0, (B + ow0) // 4))
    up = np.uint64(Up)
    zero = src.dtype.type(0)
    check = zero
    for c in range(Cq):
        for a in range(4):
            zr = np.uint64((c * 4 + a) * 4 * Up)
            for th in range(nth + 1):
                ia = 4 * (th0 + th) + a - oh0
                row = zr + np.uint64(th * Wh)
                if ia < 0 or ia >= A:
                    for par in range(4):
                        zp = row + np.uint64(par * Up)
                        for j in range(Wh):
                            Z[zp + np.uint64(j)] = 0
                    continue
                s0 = ((n * Cq + c) * A + ia) * B
                for j in range(Wh - (j1 - j0)):  # the edge columns, tested one by one
                    jj = j if j < j0 else j + j1 - j0
                    for par in range(4):
                        ib = 4 * jj + par - ow0
                        v = sf[s0 + ib] if 0 <= ib < B else zero
                        Z[row + np.uint64(par * Up + jj)] = v
                        check += v
                sb = np.uint64(s0 + 4 * j0 - ow0)
                d = row + np.uint64(j0)
                for j in range(j1 - j0):
                    s = sb + np.uint64(4 * j)
                    v0, v1 = sf[s], sf[s + np.uint64(1)]
                    v2, v3 = sf[s + np.uint64(2)], sf[s + np.uint64(3)]
                    dj = d + np.uint64(j)
                    Z[dj] = v0
                    Z[dj + up] = v1
                    Z[dj + 2 * up] = v2
                    Z[dj + 3 * up] = v3
                    check += (v0 + v1) + (v2 + v3)
            for par in range(4):
                zp = zr + np.uint64(par * Up)
                for u in range((nth + 1) * Wh, Up):
                    Z[zp + np.uint64(u)] = 0
    return check


@njit(fastmath=FM, cache=True)
def _wg4_in(Z, Up, Wh, V, VS, Cq, u0):
    # V[t*VS + c*WG_UB + j] = (B^T d B)[t] of tile u0 + j, channel c, from Z (_wg4_place):
    # the patch's columns straight from Z into a stack buffer, then its rows into V, with
    # unsigned indices, as _wg_in does.
    wide_vectors()
    e = stack_array(V, WG4_PATCH)
    # constants of V's dtype: an int times a float32 is a float64 in Numba
    c2, c3, c4, c5 = (V.dtype.type(2), V.dtype.type(3), V.dtype.type(4), V.dtype.type(5))
    p1, p2, p3 = np.uint64(4 * Up), np.uint64(8 * Up), np.uint64(12 * Up)
    p4, p5 = np.uint64(Wh), np.uint64(4 * Up + Wh)  # patch rows 4, 5: the next tile row
    v1, v2, v3, v4, v5 = (np.uint64(VS), np.uint64(2 * VS), np.uint64(3 * VS),
                          np.uint64(4 * VS), np.uint64(5 * VS))
    e1, e2, e3, e4, e5 = (np.uint64(WG_UB), np.uint64(2 * WG_UB), np.uint64(3 * WG_UB),
                          np.uint64(4 * WG_UB), np.uint64(5 * WG_UB))
    f1, f2, f3, f4, f5 = (np.uint64(6 * WG_UB), np.uint64(12 * WG_UB), np.uint64(18 * WG_UB),
                          np.uint64(24 * WG_UB), np.uint64(30 * WG_UB))
    for c in range(Cq):
        for b in range(6):
            # patch column b: phase b % 4, one tile on for b >= 4
            zc = np.uint64(c * 16 * Up + u0 + (b % 4) * Up + b // 4)
            eb = np.uint64(b * WG_UB)
            for j in range(WG_UB):
                zj = zc + np.uint64(j)
                d0, d1, d2 = Z[zj], Z[zj + p1], Z[zj + p2]
                d3, d4, d5 = Z[zj + p3], Z[zj + p4], Z[zj + p5]
                ej = eb + np.uint64(j)
                e[ej] = c2 * (d0 + d4) - c3 * (d1 - d3) - c4 * d2
                e[ej + f1] = c2 * (d4 - d1) + d2 + c5 * d3
                e[ej + f2] = c5 * d2 - c2 * (d1 + d4) - d3
                e[ej + f3] = c2 * (d1 - d3) + d2 - d4
                e[ej + f4] = c2 * (d4 - d2) + d1 - d3
                e[ej + f5] = c2 * (d1 + d5) - c3 * (d2 - d4) - c4 * d3
        for a in range(6):
            vb = np.uint64(6 * a * VS + c * WG_UB)
            ea = np.uint64(6 * a * WG_UB)
            for j in range(WG_UB):
                ej = ea + np.uint64(j)
                r0, r1, r2 = e[ej], e[ej + e1], e[ej + e2]
                r3, r4, r5 = e[ej + e3], e[ej + e4], e[ej + e5]
                v = vb + np.uint64(j)
                V[v] = c2 * (r0 + r4) - c3 * (r1 - r3) - c4 * r2
                V[v + v1] = c2 * (r4 - r1) + r2 + c5 * r3
                V[v + v2] = c5 * r2 - c2 * (r1 + r4) - r3
                V[v + v3] = c2 * (r1 - r3) + r2 - r4
                V[v + v4] = c2 * (r4 - r2) + r1 - r3
                V[v + v5] = c2 * (r1 + r5) - c3 * (r2 - r4) - c4 * r3


@njit(fastmath=FM, cache=True)
def _wg4_out(M, mo, Yb, k0, nk, Uy, u0):
    # Yb[((k0 + i)*4 + a)*4*Uy + 4*(u0 + j) + b] = (A^T m A)[4a + b] with m[t] = M[mo + (t*WG_KX
    # + i)*WG_UB + j] (t = 6a + b): a tile's four columns side by side, so that a tile row's
    # output row is contiguous in Yb (the copy to y then reads whole vectors). Through stack
    # buffers (nothing to alias), as _wg_out.
    wide_vectors()
    m = stack_array(M, WG4_PATCH)
    r = stack_array(M, WG4_ROWS)
    o = stack_array(M, WG4_OUT)
    c2, c4, c8 = M.dtype.type(2), M.dtype.type(4), M.dtype.type(8)
    h2, h4, h8 = M.dtype.type(0.5), M.dtype.type(0.25), M.dtype.type(0.125)
    for i in range(nk):
        for t in range(36):
            mb = mo + np.uint64((t * WG_KX + i) * WG_UB)
            for j in range(WG_UB):
                m[t * WG_UB + j] = M[mb + np.uint64(j)]
        for b in range(6):
            for j in range(WG_UB):
                m0, m1, m2 = m[b * WG_UB + j], m[(6 + b) * WG_UB + j], m[(12 + b) * WG_UB + j]
                m3, m4 = m[(18 + b) * WG_UB + j], m[(24 + b) * WG_UB + j]
                m5 = m[(30 + b) * WG_UB + j]
                sm, df = m1 + m2, m1 - m2
                r[b * WG_UB + j] = m0 + sm + m3 + m4
                r[(6 + b) * WG_UB + j] = df + h2 * m3 - c2 * m4
                r[(12 + b) * WG_UB + j] = sm + h4 * m3 + c4 * m4
                r[(18 + b) * WG_UB + j] = df + h8 * m3 - c8 * m4 + m5
        for a in range(4):
            for j in range(WG_UB):
                ra = 6 * a * WG_UB + j
                m0, m1, m2 = r[ra], r[ra + WG_UB], r[ra + 2 * WG_UB]
                m3, m4, m5 = r[ra + 3 * WG_UB], r[ra + 4 * WG_UB], r[ra + 5 * WG_UB]
                sm, df = m1 + m2, m1 - m2
                o[4 * j] = m0 + sm + m3 + m4
                o[4 * j + 1] = df + h2 * m3 - c2 * m4
                o[4 * j + 2] = sm + h4 * m3 + c4 * m4
                o[4 * j + 3] = df + h8 * m3 - c8 * m4 + m5
            d = np.uint64(((k0 + i) * 4 + a) * 4 * Uy + 4 * u0)
            for j in range(4 * WG_UB):
                Yb[d + np.uint64(j)] = o[j]


@njit(fastmath=FM, cache=True)
def _wg4_copy(Yb, Uy, bias, yf, n, K, OH, OW, th0, nth, Wh):
    # y[n, k, 4*th + a, ow] = Yb[(k*4 + a)*4*Uy + 4*(th - th0)*Wh + ow] + bias[k] for the
    # band's output rows (see _wg4_out: whole rows, contiguous).
    for k in range(K):
        bk = bias[k]
        for oh in range(4 * th0, min(OH, 4 * (th0 + nth))):
            th, a = oh // 4 - th0, oh % 4
            e = np.uint64((k * 4 + a) * 4 * Uy + 4 * th * Wh)
            d = np.uint64(((n * K + k) * OH + oh) * OW)
            for ow in range(OW):
                yf[d + np.uint64(ow)] = Yb[e + np.uint64(ow)] + bk


def _wg_bands(N, Cq, Ko, OH, OW, m=2):
    # Tile-row bands per sample (m x m output tiles): a task's planes Z and outputs Yb
    # within WG_BYTES, and about 4 tasks per thread where the samples alone give fewer.
    TH, Wh = -(-OH // m), -(-OW // m) + 1
    row_bytes = 4 * Wh * m * m * (Cq + Ko)
    nband = max(1, min(TH, -(-TH * row_bytes // WG_BYTES)))
    want = 4 * numba.get_num_threads()
    return min(TH, max(nband, -(-want // N)))


def _wg_lane_use(N, Cq, Ko, OH, OW, m):
    # The share of the lanes of F(m x m, 3x3)'s blocks that hold output tiles: a band's
    # tile rows, each one tile longer than the image's (Wh), in blocks of WG_UB tiles.
    nband = _wg_bands(N, Cq, Ko, OH, OW, m)
    TH, TW = -(-OH // m), -(-OW // m)
    tb = -(-TH // nband)
    lanes = sum(-(-(min(tb, TH - th0) * (TW + 1)) // WG_UB) * WG_UB
                for th0 in range(0, TH, tb))
    return TH * TW / lanes


def _run_wg(src, w, bias, out, Kout_g, Cq, grid, OH, OW, transpose, m=2):
    # out (N, Kout_g, OH, OW) by F(m x m, 3x3), m = 2 (wg) or 4 (wg4); a sample whose input
    # holds NaN or inf, or weights that do, go to px instead: the transforms add and
    # subtract neighbouring inputs, so an inf would make NaN where the direct sum keeps inf.
    if not np.isfinite(w).all():
        _run_px(src, w, bias, out.reshape(-1), 1, Kout_g, Cq, 3, 3, (1, 1), grid, OH, OW,
                transpose)
        return
    # reused from call to call (9 MB at C = K = 256 with F(4x4): fresh pages faulted in
    # inside the transform's parallel region)
    U = workspace("conv.wg_weights", ((m + 2) ** 2, -(-Kout_g // WG_KX), Cq, WG_KX), w.dtype)
    N = src.shape[0]
    bad = np.empty(N, np.uint8)
    nband = _wg_bands(N, Cq, Kout_g, OH, OW, m)
    winograd_weights(w, U, transpose, WG4_G if m == 4 else WG_G)
    conv_wg(src, U, bias, out.reshape(-1), Kout_g, OH, OW, grid.oh0, grid.ow0, nband, bad, m)
    for n in np.flatnonzero(bad):
        _run_px(src[n:n + 1], w, bias, out[n:n + 1].reshape(-1), 1, Kout_g, Cq, 3, 3, (1, 1),
                grid, OH, OW, transpose)


# ----------------------------------------------------------------------------
# the KERNELS entry points: choose a version, run it


def _bias_or_zeros(b, K, dtype):
    return b if b is not None else np.zeros(K, dtype=dtype)


def _direct(version, src, w, bias, out, G, Kout_g, Cq, geo, grid, OH, OW, stride,
            transpose):
    # Forward or backward-data by a direct version (tile, px or sv): out (N, G*Kout_g, OH, OW).
    dil = (geo.dh, geo.dw)
    if version == "px":
        _run_px(src, w, bias, out.reshape(-1), G, Kout_g, Cq, geo.R, geo.S, dil, grid, OH,
                OW, transpose)
    elif version == "sv":
        _run_sv(src, w, bias, out.reshape(-1), G, Kout_g, Cq, geo.R, geo.S, dil, grid, OH,
                OW, transpose)
    elif version in ("wg", "wg4"):
        _run_wg(src, w, bias, out, Kout_g, Cq, grid, OH, OW, transpose,
                4 if version == "wg4" else 2)
    else:
        _run_tile(src, w, bias, out.reshape(-1), G, Kout_g, Cq, geo.R, geo.S, dil, grid,
                  OH, OW, stride, transpose)


def conv2d_forward(x, w, b, y, stride, padding, dilation, groups, algo):
    """y (N, K, OH, OW) = conv2d(x (N, C, H, W), w (K, Cg, R, S)) + b (K,) or no bias."""
    geo = geometry(x.shape, w.shape, y.shape, stride, padding, dilation, groups)
    version, _ = choose("forward", geo, algo)
    if version == "im2col":
        im2col_forward(geo, x, w, b, y)
        return
    G = geo.G
    _direct(version, x, w, _bias_or_zeros(b, geo.K, w.dtype), y, G, geo.K // G, geo.C // G,
            geo, forward_grid(geo), geo.OH, geo.OW, stride, False)


def conv2d_backward_data(g, w, dx, stride, padding, dilation, groups, algo):
    """dx (N, C, H, W) = gradient of sum(conv2d(x, w) * g) w.r.t. x, g (N, K, OH, OW)."""
    geo = geometry(dx.shape, w.shape, g.shape, stride, padding, dilation, groups)
    version, _ = choose("backward_data", geo, algo)
    if version == "im2col":
        im2col_backward_data(geo, g, w, dx)
        return
    G = geo.G
    _direct(version, g, w, np.zeros(geo.C, w.dtype), dx, G, geo.C // G, geo.K // G, geo,
            backward_data_grid(geo), geo.H, geo.W, (1, 1), True)


BACKWARD_WEIGHTS = {
    "tile": tile_backward_weights,
    "im2col": im2col_backward_weights,
    "cl": cl_backward_weights,
    "pxw": pxw_backward_weights,
    "sv": sv_backward_weights,
}


def conv2d_backward_weights(g, x, dw, db, stride, padding, dilation, groups, algo):
    """dw (K, Cg, R, S) and db (K,) or None: gradients of sum((conv2d(x, w) + b) * g)."""
    geo = geometry(x.shape, dw.shape, g.shape, stride, padding, dilation, groups)
    version, _ = choose("backward_weights", geo, algo)
    BACKWARD_WEIGHTS[version](geo, g, x, dw, db)
