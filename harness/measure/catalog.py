"""The mutation catalog, kept as data: small textual edits of the implementation as it was written
(FIXTURE, tests/fixtures/gpt2_frozen.py, a frozen verbatim copy of impl/gpt2.py that the catalog is
guaranteed to match), and the sensitivity probes (one constant scaled by a factor each).

A catalog entry has an exact `old` substring that must occur exactly once in the file it is applied
to, its `new` replacement ("" deletes it), a `kind` ("semantic": changes the math, verify must fail;
"equivalent": changes rounding only, verify must pass), a description, and `expect`: the first tensor
the semantic tier should name (its printed name, `name@step` for trajectory scalars), where known.
Against an edited or other implementation an entry whose `old` text does not occur exactly once is
"stale" (0 occurrences) or "ambiguous" (several): information about the file, never a verdict.
harness/measure/mutate.py runs the catalog, harness/measure/sensitivity.py the probes.
"""
from nanoproof.paths import FIXTURES_DIR

# the frozen copy of impl/gpt2.py the catalog (and PROBES) were written against; tests run the
# catalog on it so they do not depend on the text of impl/gpt2.py, which users edit
FIXTURE = FIXTURES_DIR / "gpt2_frozen.py"


def M(name, kind, area, old, new, description, expect=None):
    return {"name": name, "kind": kind, "area": area, "old": old, "new": new,
            "description": description, "expect": expect}


S, E = "semantic", "equivalent"
CATALOG = [
    # ------------------------------------------------------------------ init
    M("init_std", S, "init", "rng.normal(0.0, 0.02 /", "rng.normal(0.0, 0.01 /",
      "init std 0.02 -> 0.01", "init wte"),
    M("init_cproj_scale", S, "init", 'math.sqrt(2 * cfg["n_layer"])', 'math.sqrt(cfg["n_layer"])',
      "c_proj init std 0.02/sqrt(2L) -> 0.02/sqrt(L)", "init h.0.attn.c_proj.weight"),
    M("init_ln_weight_zero", S, "init", "p = np.ones(shape)", "p = np.zeros(shape)",
      "LayerNorm weights initialised to 0 instead of 1", "init h.0.ln_1.weight"),
    # ------------------------------------------------------------------ sampler
    M("batch_high_off_by_one", S, "sampler", "rng.integers(0, len(data) - block_size, size",
      "rng.integers(0, len(data) - block_size - 1, size",
      "sampler's upper bound off by one (len - T - 1)", "get_batch x"),
    M("batch_window_shift", S, "sampler", "np.arange(block_size + 1)", "np.arange(1, block_size + 2)",
      "batch window starts at i + 1", "get_batch x"),
    M("batch_y_not_shifted", S, "sampler", "return x[:, :-1], x[:, 1:]", "return x[:, :-1], x[:, :-1]",
      "targets equal inputs (no shift)", "get_batch y"),
    # ------------------------------------------------------------------ lr schedule
    M("warmup_denominator", S, "schedule", '(step + 1) / (hp["warmup_iters"] + 1)',
      '(step + 1) / hp["warmup_iters"]', "warmup divides by warmup_iters, not warmup_iters + 1", "lr_at"),
    M("decay_denominator", S, "schedule", '/ (hp["lr_decay_iters"] - hp["warmup_iters"])',
      '/ hp["lr_decay_iters"]', "cosine ratio's denominator forgets the warmup", "lr_at"),
    M("cosine_sign", S, "schedule", "0.5 * (1.0 + math.cos(math.pi * ratio))",
      "0.5 * (1.0 - math.cos(math.pi * ratio))", "cosine coefficient sign-flipped (decay runs upwards)", "lr_at"),
    M("decay_flat_lr_not_min", S, "schedule", 'return hp["min_lr"]\n', 'return hp["learning_rate"]\n',
      "after lr_decay_iters the lr returns to learning_rate instead of min_lr", "lr_at"),
    # ------------------------------------------------------------------ forward
    M("pos_ids_off_by_one", S, "forward", 'params["wpe"][:T]', 'params["wpe"][xp.arange(T) - 1]',
      "position ids shifted by one (position 0 reads the last row of wpe)", "emb"),
    M("ln_eps", S, "forward", "rstd += 1e-5", "rstd += 1e-6", "LayerNorm eps 1e-5 -> 1e-6", "h.0.ln_1"),
    M("ln_no_centering", S, "forward", "    xhat = x - rowsum(x) * (1.0 / C)\n",
      "    xhat = x + 0 * rowsum(x) * (1.0 / C)\n", "LayerNorm forgets to subtract the mean", "h.0.ln_1"),
    M("ln_bias_sign", S, "forward", "    out += b\n    return out, xhat, rstd",
      "    out -= b\n    return out, xhat, rstd",
      "LayerNorm bias subtracted (biases are 0 at init: caught once they move)", "loss@1"),
    M("attn_scale_C", S, "forward", "att *= 1.0 / math.sqrt(HS)", "att *= 1.0 / math.sqrt(C)",
      "attention scale 1/sqrt(C) instead of 1/sqrt(head size)", "h.0.attn.att"),
    M("causal_mask_leak", S, "forward", '-xp.inf, dtype=params["wte"].dtype), 1)',
      '-xp.inf, dtype=params["wte"].dtype), 2)', "causal mask off by one: each query sees the next token",
      "h.0.attn.att"),
    M("causal_mask_no_self", S, "forward", '-xp.inf, dtype=params["wte"].dtype), 1)',
      '-xp.inf, dtype=params["wte"].dtype), 0)', "causal mask off by one the other way: the diagonal is masked",
      "h.0.attn.att"),
    M("softmax_wrong_axis", S, "forward", "att /= rowsum(att)", "att /= att.sum(-2, keepdims=True)",
      "softmax normalised over the query axis instead of the key axis", "h.0.attn.att"),
    M("qk_swapped", S, "forward", "    q, k, v = qkv.reshape(B, T, 3, NH, HS).transpose(2, 0, 3, 1, 4)     #",
      "    k, q, v = qkv.reshape(B, T, 3, NH, HS).transpose(2, 0, 3, 1, 4)     #",
      "q and k swapped in the forward (scores transposed)", "h.0.attn.att"),
    M("heads_batch_time_mixed", S, "forward", "out=y.reshape(B, T, NH, HS).transpose(0, 2, 1, 3))",
      "out=y.reshape(T, B, NH, HS).transpose(1, 2, 0, 3))",
      "merging heads mixes batch and time (y's memory read as (T, B) while written as (B, T))", "h.0.attn.y"),
    M("attn_residual_dropped", S, "forward", 'x = c[f"h.{i}.res_1"] = x + ap', 'x = c[f"h.{i}.res_1"] = ap',
      "attention residual connection dropped", "h.0.res_1"),
    M("gelu_cubic_const", S, "forward", "th *= GELU_C * 0.044715", "th *= GELU_C * 0.0447",
      "GELU cubic constant 0.044715 -> 0.0447 (README's example)", "h.0.mlp.gelu"),
    M("gelu_sqrt_2_over_pi", S, "forward", "GELU_C = math.sqrt(2.0 / math.pi)", "GELU_C = 0.7978",
      "GELU's sqrt(2/pi) rounded to 0.7978", "h.0.mlp.gelu"),
    M("gelu_sign", S, "forward", 'g = c[f"h.{i}.mlp.gelu"] = th + 1.0', 'g = c[f"h.{i}.mlp.gelu"] = 1.0 - th',
      "GELU 1 + tanh sign-flipped", "h.0.mlp.gelu"),
    M("loss_mean_over_batch_only", S, "forward", 'return float((xp.log(c["sumexp"]) - picked).mean()), c',
      'return float((xp.log(c["sumexp"]) - picked).sum() / B), c', "loss divided by B instead of B*T", "loss"),
    # ------------------------------------------------------------------ backward
    M("ce_grad_scale_B", S, "backward",
      '(1.0 / (B * T * c["sumexp"]))).reshape(B * T, -1)  # softmax / BT, (BT, V)\n'
      '    dlogits[xp.arange(B * T), targets.reshape(-1)] -= 1.0 / (B * T)',
      '(1.0 / (B * c["sumexp"]))).reshape(B * T, -1)  # softmax / BT, (BT, V)\n'
      '    dlogits[xp.arange(B * T), targets.reshape(-1)] -= 1.0 / B',
      "cross-entropy gradient (both softmax and onehot) scaled by 1/B instead of 1/(B*T)", "dln_f.bias"),
    M("ce_grad_onehot_sign", S, "backward", "targets.reshape(-1)] -= 1.0 / (B * T)",
      "targets.reshape(-1)] += 1.0 / (B * T)", "softmax + onehot instead of softmax - onehot", "dln_f.bias"),
    M("ln_back_dw_no_xhat", S, "backward", 'dw = xp.einsum("nc,nc->c", dout.reshape(-1, C), xhat.reshape(-1, C))',
      "dw = dout.reshape(-1, C).sum(0)", "LayerNorm weight gradient forgets xhat", "dln_f.weight"),
    M("ln_back_drop_mean", S, "backward", "    dx -= rowsum(dx) * (1.0 / C)\n", "",
      "LayerNorm backward drops the mean term", "dh.1.mlp.c_proj.bias"),
    M("ln_back_drop_var", S, "backward", "    dx -= xhat * m2\n", "",
      "LayerNorm backward drops the variance term", "dh.1.mlp.c_proj.bias"),
    M("mlp_proj_bias_grad_doubled", S, "backward", 'dx, c[f"h.{i}.mlp.gelu"], p("mlp.c_proj.weight"))\n',
      'dx, c[f"h.{i}.mlp.gelu"], p("mlp.c_proj.weight"))\n'
      '        g[f"h.{i}.mlp.c_proj.bias"] = 2 * g[f"h.{i}.mlp.c_proj.bias"]\n',
      "mlp c_proj bias gradient doubled (linear_back is shared: the doubling follows its call)",
      "dh.1.mlp.c_proj.bias"),
    M("gelu_back_sign", S, "backward", "        tmp = 1.0 - th\n", "        tmp = 1.0 + th\n",
      "GELU backward: tanh' = (1 - th)(1 + th) with the first factor's sign flipped", "dh.1.mlp.c_fc.bias"),
    M("gelu_back_drop_3", S, "backward", "df *= GELU_C * 3 * 0.044715", "df *= GELU_C * 0.044715",
      "GELU backward forgets the 3 of the cubic's derivative", "dh.1.mlp.c_fc.bias"),
    M("fc_weight_grad_wrong_input", S, "backward", 'df, c[f"h.{i}.ln_2"], p("mlp.c_fc.weight"))',
      'df, c[f"h.{i}.ln_1"], p("mlp.c_fc.weight"))', "c_fc weight gradient uses ln_1's output",
      "dh.1.mlp.c_fc.weight"),
    M("mlp_residual_grad_dropped", S, "backward", "        dx += dm\n", "        dx = dm\n",
      "backward drops the MLP residual's gradient", "dh.1.attn.c_proj.bias"),
    M("attn_proj_bias_grad_halved", S, "backward", 'dx, c[f"h.{i}.attn.y"], p("attn.c_proj.weight"))\n',
      'dx, c[f"h.{i}.attn.y"], p("attn.c_proj.weight"))\n'
      '        g[f"h.{i}.attn.c_proj.bias"] = 0.5 * g[f"h.{i}.attn.c_proj.bias"]\n',
      "attention c_proj bias gradient halved", "dh.1.attn.c_proj.bias"),
    M("dv_no_transpose", S, "backward", "xp.matmul(att.transpose(0, 1, 3, 2), dy, out=dv)",
      "xp.matmul(att, dy, out=dv)", "dv = att @ dy (missing transpose)", "dh.1.attn.c_attn.bias"),
    M("softmax_back_no_projection", S, "backward", "        ds -= rowsum(ds, att)  ",
      "        ds -= 0 * rowsum(ds, att)  ",
      "softmax backward drops the projection term", "dh.1.attn.c_attn.bias"),
    M("softmax_back_wrong_axis", S, "backward", "ds -= rowsum(ds, att)", "ds -= (ds * att).sum(-2, keepdims=True)",
      "softmax backward sums over the wrong axis", "dh.1.attn.c_attn.bias"),
    M("attn_back_no_scale", S, "backward", "        ds *= 1.0 / math.sqrt(HS)\n", "",
      "attention backward forgets the 1/sqrt(head size) scale", "dh.1.attn.c_attn.bias"),
    M("dq_dk_swapped", S, "backward",
      "xp.matmul(ds, k, out=dq)\n        xp.matmul(ds.transpose(0, 1, 3, 2), q, out=dk)",
      "xp.matmul(ds, k, out=dk)\n        xp.matmul(ds.transpose(0, 1, 3, 2), q, out=dq)", "dq and dk swapped",
      "dh.1.attn.c_attn.bias"),
    M("dqkv_heads_mixed", S, "backward", "dq, dk, dv = dqkv.reshape(B, T, 3, NH, HS).transpose(2, 0, 3, 1, 4)",
      "dq, dk, dv = dqkv.reshape(B, T, 3, HS, NH).transpose(2, 0, 4, 1, 3)",
      "dqkv's head/head-size axes swapped in the reshape", "dh.1.attn.c_attn.bias"),
    M("ln1_back_uses_ln2_weight", S, "backward", 'c[f"h.{i}.ln_1.rstd"], p("ln_1.weight"))',
      'c[f"h.{i}.ln_1.rstd"], p("ln_2.weight"))',
      "ln_1's backward multiplies by ln_2's weight (equal at init: only the trajectory can see it)",
      "grad_norm@1"),
    M("attn_residual_grad_dropped", S, "backward", "        dx += da\n", "        dx = da\n",
      "backward drops the attention residual's gradient", "dh.0.mlp.c_proj.bias"),
    M("wpe_grad_doubled", S, "backward", 'g["wpe"][:T] = dx.sum(0)', 'g["wpe"][:T] = 2 * dx.sum(0)',
      "position embedding gradient doubled", "dwpe"),
    M("wte_grad_no_lm_head_share", S, "backward", 'dwte = dlogits.T @ c["ln_f"].reshape(B * T, C)',
      'dwte = xp.zeros_like(params["wte"])', "tied embedding: lm_head's contribution to dwte missing", "dwte"),
    M("wte_grad_no_token_share", S, "backward", "dwte[ids] += onehot @ dx.reshape(B * T, C)",
      "dwte[ids] += 0 * (onehot @ dx.reshape(B * T, C))",
      "tied embedding: the token lookup's contribution to dwte missing", "dwte"),
    M("wte_grad_drops_repeats", S, "backward", "dwte[ids] += onehot @ dx.reshape(B * T, C)",
      "dwte[idx.reshape(-1)] += dx.reshape(B * T, C)",
      "buffered fancy-index += : repeated token ids keep only one contribution", "dwte"),
    # ------------------------------------------------------------------ optimizer
    M("grad_norm_no_sqrt", S, "optimizer", "norm = math.sqrt(sum(", "norm = (sum(",
      "global grad norm without the square root", "grad_norm@0"),
    M("clip_threshold_scaled", S, "optimizer", 'hp["grad_clip"] / (norm + 1e-6)',
      '0.9 * hp["grad_clip"] / (norm + 1e-6)',
      "clip threshold 0.9 x grad_clip", "wte (after 1 updates)"),
    M("clip_no_1e-6", S, "optimizer", 'hp["grad_clip"] / (norm + 1e-6)', 'hp["grad_clip"] / norm',
      "clip without torch's + 1e-6", "h.0.attn.c_attn.weight (after 1 updates)"),
    M("clip_no_min", S, "optimizer", 'min(1.0, hp["grad_clip"] / (norm + 1e-6))', 'hp["grad_clip"] / (norm + 1e-6)',
      "clipping also scales small gradients up", "wte (after 3 updates)"),
    M("beta1_for_beta2", S, "optimizer", 'for k in ("beta1", "beta2", "eps", "weight_decay")',
      'for k in ("beta1", "beta1", "eps", "weight_decay")',
      "AdamW beta2 replaced by beta1 (invisible in the first update: bias correction)", "loss@2"),
    M("beta2_in_m", S, "optimizer", "tmp = g * ((1 - b1) * scale)", "tmp = g * ((1 - b2) * scale)",
      "first moment accumulates with 1 - beta2", "wte (after 1 updates)"),
    M("bias_correction_t_off", S, "optimizer", "float(scale), step + 1", "float(scale), step + 2",
      "bias correction with t = step + 2", "wte (after 1 updates)"),
    M("bias_correction_dropped_m", S, "optimizer", "tmp *= lr / (1 - b1 ** t)", "tmp *= lr",
      "first-moment bias correction dropped", "wte (after 1 updates)"),
    M("bias_correction_dropped_v", S, "optimizer", "xp.multiply(v, 1 / (1 - b2 ** t), out=tmp)",
      "xp.multiply(v, 1.0, out=tmp)", "second-moment bias correction dropped", "wte (after 1 updates)"),
    M("adam_eps_inside_sqrt", S, "optimizer",
      "tmp = xp.sqrt(xp.multiply(v, 1 / (1 - b2 ** t), out=tmp), out=tmp)\n        tmp += eps",
      "tmp = xp.multiply(v, 1 / (1 - b2 ** t), out=tmp)\n        tmp += eps\n        tmp = xp.sqrt(tmp, out=tmp)",
      "AdamW eps inside the square root", "wte (after 1 updates)"),
    M("adam_eps_1e-6", S, "optimizer", "tmp += eps", "tmp += 1e-6", "AdamW eps 1e-8 -> 1e-6", "wte (after 1 updates)"),
    M("wd_on_all_params", S, "optimizer", "if p.ndim >= 2:", "if p.ndim >= 1:",
      "weight decay applied to biases and LayerNorm too", "h.0.ln_1.weight (after 1 updates)"),
    M("wd_without_lr", S, "optimizer", "p *= 1 - lr * decay", "p *= 1 - 0.01 * decay",
      "weight decay not scaled by the lr", "wte (after 1 updates)"),
    # ------------------------------------------------------------------ generation (the generate case)
    M("kv_cache_write_off_by_one", S, "generate", "kv[i][0][:, :, start:S], kv[i][1][:, :, start:S] = k, v",
      "kv[i][0][:, :, start + 1:S + 1], kv[i][1][:, :, start + 1:S + 1] = k, v",
      "the KV cache stores each token's keys and values one slot late", "greedy logits (kv cache)@0"),
    M("generate_no_key_mask", S, "generate", "(valid[:, None, None, :] | (keys == queries))",
      "(valid[:, None, None, :] | True)",
      "left padding not masked: real tokens attend to the pad slots", "greedy logits (kv cache)@0"),
    M("generate_pos_ignores_padding", S, "generate", "np.maximum(np.arange(T) - pad[:, None], 0)",
      "np.maximum(np.arange(T) - 0 * pad[:, None], 0)",
      "position ids count the pad slots (a left-padded row starts at position pad, not 0)",
      "greedy logits (kv cache)@0"),
    M("top_p_off_by_one", S, "generate", "np.where(ranked.cumsum(-1) - ranked < top_p",
      "np.where(ranked.cumsum(-1) < top_p",
      "top-p drops the token whose probability crosses p (the kept set no longer reaches p)",
      "sampled tokens (kv cache)"),
    M("top_k_keeps_k_plus_1", S, "generate", "[:, [-min(top_k, logits.shape[-1])]]",
      "[:, [-min(top_k + 1, logits.shape[-1])]]", "top-k keeps k + 1 tokens", "sampled tokens (kv cache)"),
    M("eq_kv_cache_two_new_slots", E, "generate", "lo = t - 1 if kv_cache and t > L else 0",
      "lo = t - 2 if kv_cache and t > L else 0", "the cached path recomputes the last two slots, not one"),
    # ------------------------------------------------------------------ equivalent rewrites
    M("eq_attn_scale_divide", E, "forward", "att *= 1.0 / math.sqrt(HS)", "att /= math.sqrt(HS)",
      "x / sqrt(d) instead of x * (1 / sqrt(d))"),
    M("eq_attn_scale_into_q", E, "forward",
      "att = q @ k.transpose(0, 1, 3, 2)                                   # (B, NH, T, T)\n"
      "        att *= 1.0 / math.sqrt(HS)\n",
      "att = (q * (1.0 / math.sqrt(HS))) @ k.transpose(0, 1, 3, 2)\n", "scale folded into q"),
    M("eq_rstd_reciprocal_sqrt", E, "forward", "    rstd **= -0.5\n", "    rstd = 1.0 / rstd ** 0.5\n",
      "rstd as 1 / sqrt(var + eps)"),
    M("eq_gelu_reassociated", E, "forward", "        th *= GELU_C * 0.044715\n        th += GELU_C\n        th *= f\n",
      "        th *= 0.044715\n        th *= f\n        th += f\n        th *= GELU_C\n",
      "GELU's tanh argument as sqrt(2/pi) (0.044715 f^3 + f) instead of f (sqrt(2/pi) + sqrt(2/pi) 0.044715 f^2)"),
    M("eq_gelu_split", E, "forward",
      "th + 1.0                                 # 0.5 f (1 + th)\n        g *= f\n        g *= 0.5\n",
      "0.5 * f + 0.5 * f * th\n", "GELU 0.5 f (1 + t) expanded, on fresh arrays"),
    M("eq_qkv_split_matmul", E, "forward", 'linear(a, p("attn.c_attn.weight"), p("attn.c_attn.bias"))',
      'xp.concatenate([a @ p("attn.c_attn.weight")[:, j * C:(j + 1) * C] for j in range(3)], -1)'
      ' + p("attn.c_attn.bias")', "qkv as three matmuls instead of one fused"),
    M("eq_softmax_shift_first_key", E, "forward", "att -= att.max(-1, keepdims=True)", "att -= att[..., :1].copy()",
      "softmax stabilised by the first key's score (never masked) instead of the max"),
    M("eq_attn_per_head_loop", E, "forward",
      "        xp.matmul(att, v, out=y.reshape(B, T, NH, HS).transpose(0, 2, 1, 3))\n",
      "        for h in range(NH):\n            y[:, :, h * HS:(h + 1) * HS] = att[:, h] @ v[:, h]\n",
      "attention output one head at a time instead of one batched matmul over the heads"),
    M("eq_rowsum_numpy_sum", E, "forward",
      'return (xp.einsum("...i->...", a) if b is None else xp.einsum("...i,...i->...", a, b))[..., None]',
      "return (a if b is None else a * b).sum(-1, keepdims=True)",
      "rowsum (LayerNorm, softmax, cross-entropy) by numpy's pairwise sum instead of einsum"),
    M("eq_lse_shift_mean", E, "forward", "e = logits - logits.max(-1, keepdims=True)",
      "e = logits - logits.mean(-1, keepdims=True)", "log-sum-exp shifted by the mean logit instead of the max"),
    M("eq_ce_grad_divide", E, "backward", '(c["exp"] * (1.0 / (B * T * c["sumexp"])))',
      '(c["exp"] / (B * T * c["sumexp"]))', "softmax / (B T sumexp) instead of * (1 / (B T sumexp))"),
    M("eq_ln_back_regrouped", E, "backward", "    dx -= rowsum(dx) * (1.0 / C)\n    dx -= xhat * m2\n",
      "    dx -= rowsum(dx) * (1.0 / C) + xhat * m2\n", "LayerNorm backward's two subtractions regrouped"),
    M("eq_wte_add_at", E, "backward", "dwte[ids] += onehot @ dx.reshape(B * T, C)",
      "xp.add.at(dwte, idx.reshape(-1), dx.reshape(B * T, C))", "token share of dwte by unbuffered add.at"),
    M("eq_grad_norm_reversed", E, "optimizer", "for g in grads.values()))", "for g in reversed(list(grads.values()))))",
      "global grad norm summed in reverse order"),
    M("eq_adamw_fused", E, "optimizer",
      "tmp = xp.sqrt(xp.multiply(v, 1 / (1 - b2 ** t), out=tmp), out=tmp)\n"
      "        tmp += eps                                                          # sqrt(v / (1 - b2^t)) + eps\n"
      "        tmp = xp.divide(m, tmp, out=tmp)\n"
      "        tmp *= lr / (1 - b1 ** t)\n"
      "        p -= tmp\n",
      "p -= lr * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)) ** 0.5 + eps)\n",
      "AdamW update as one expression on fresh arrays, the bias corrections applied by division"),
    M("eq_cosine_squared", E, "schedule", "0.5 * (1.0 + math.cos(math.pi * ratio))",
      "math.cos(0.5 * math.pi * ratio) ** 2",
      "cosine coefficient as cos^2(pi r / 2)"),
    M("eq_decay_ge", E, "schedule", 'if step > hp["lr_decay_iters"]:', 'if step >= hp["lr_decay_iters"]:',
      "> vs >= at lr_decay_iters: the cosine gives exactly min_lr there"),
]

# A fixed subset run by tests/test_mutate.py and `scripts/mutate.py --subset ci`: semantic mutants
# across setup, forward, backward (both tied-embedding shares), optimizer and sampler, and three
# equivalent rewrites.
CI_SUBSET = ("init_cproj_scale", "batch_high_off_by_one", "warmup_denominator", "causal_mask_leak",
             "gelu_cubic_const", "ln_back_drop_var", "softmax_back_no_projection",
             "wte_grad_no_lm_head_share", "wte_grad_drops_repeats", "grad_norm_no_sqrt",
             "eq_attn_scale_into_q", "eq_gelu_reassociated", "eq_adamw_fused")
SUBSETS = {"ci": CI_SUBSET}


# ----------------------------------------------------------------------------- catalog

def by_name():
    return {m["name"]: m for m in CATALOG}


def occurrences(entry, text):
    return text.count(entry["old"])


def status_of(entry, text):
    """'ok' when `old` occurs exactly once in text, else 'stale' (never) or 'ambiguous' (several)."""
    n = occurrences(entry, text)
    return "ok" if n == 1 else ("stale" if n == 0 else "ambiguous")


def apply(entry, text):
    """The mutated source; ValueError when the entry is stale or ambiguous."""
    st = status_of(entry, text)
    if st != "ok":
        raise ValueError(f"{entry['name']}: {st}: `old` occurs {occurrences(entry, text)} times")
    return text.replace(entry["old"], entry["new"], 1)


def write_rewrites(folder, base=FIXTURE, log=print):
    """[(name, path)]: the catalog's rounding-only ("equivalent") rewrites of the file `base` (default
    the frozen copy they are written against), each written to `folder`; an entry that does not apply
    to `base` is named through `log` and skipped."""
    from pathlib import Path
    text = Path(base).read_text(encoding="utf-8")
    out = []
    for entry in (m for m in CATALOG if m["kind"] == "equivalent"):
        if status_of(entry, text) != "ok":
            log(f"rewrite {entry['name']}: {status_of(entry, text)} in {base}, skipped")
            continue
        path = Path(folder) / f"gpt2_{entry['name']}.py"
        path.write_text(apply(entry, text), encoding="utf-8")
        out.append((entry["name"], path))
    return out


def catalog_problems(text, catalog=None):
    """Every way the catalog is malformed against `text` (impl/gpt2.py's source); [] when fine."""
    catalog = CATALOG if catalog is None else catalog
    out = []
    names = [m["name"] for m in catalog]
    out += [f"duplicate name {n}" for n in sorted({n for n in names if names.count(n) > 1})]
    for m in catalog:
        missing = [k for k in ("name", "kind", "old", "description") if not m.get(k)]
        missing += [] if isinstance(m.get("new"), str) else ["new"]   # "" is allowed: a deleted line
        if missing:
            out.append(f"{m.get('name')}: missing {', '.join(missing)}")
        if m.get("kind") not in ("semantic", "equivalent"):
            out.append(f"{m.get('name')}: kind {m.get('kind')!r}")
        if m.get("old") == m.get("new"):
            out.append(f"{m['name']}: old == new")
        if m.get("old") and status_of(m, text) != "ok":
            out.append(f"{m['name']}: {status_of(m, text)} (`old` occurs {occurrences(m, text)} times)")
    for k in ("semantic", "equivalent"):
        n = sum(m.get("kind") == k for m in catalog)
        if n < (40 if k == "semantic" else 10):
            out.append(f"only {n} {k} mutants")
    for n in CI_SUBSET:
        if n not in names:
            out.append(f"CI_SUBSET names unknown mutant {n}")
    return out


def select(only=None, subset=None):
    cat = by_name()
    names = list(cat)
    if subset:
        names = [n for n in SUBSETS[subset]]
    if only:
        unknown = [n for n in only if n not in cat]
        if unknown:
            raise KeyError(f"unknown mutant(s): {', '.join(unknown)}")
        names = [n for n in names if n in only] if subset else list(only)
    return [cat[n] for n in names]



def not_applying_line(entries, path):
    """'N of M catalog entries no longer apply to FILE' (stale: ..., ambiguous: ...): information about
    the file the catalog was matched against, never a failure. `entries`: results or probe results,
    each with a 'status'."""
    by = {}
    for e in entries:
        if e["status"] != "ok":
            by.setdefault(e["status"], []).append(e["name"])
    n = sum(len(v) for v in by.values())
    detail = "; ".join(f"{st}: {', '.join(names)}" for st, names in sorted(by.items()))
    return (f"{n} of {len(entries)} catalog entries no longer apply to {path}"
            + (f" ({detail}; information only: not run, not counted)" if n else ""))


# ----------------------------------------------------------------------------- sensitivity probes
# A probe scales one constant of the file by (1 + delta): `old` must occur once, `new` holds `{f}`
# for the factor (harness/measure/sensitivity.py).

def P(name, old, new, description):
    return {"name": name, "old": old, "new": new, "description": description}


PROBES = [
    P("ln_eps", "rstd += 1e-5", "rstd += 1e-5 * {f}", "LayerNorm epsilon 1e-5"),
    P("gelu_c", "GELU_C = math.sqrt(2.0 / math.pi)", "GELU_C = math.sqrt(2.0 / math.pi) * {f}",
      "GELU's sqrt(2/pi), forward and backward"),
    P("gelu_cubic", "th *= GELU_C * 0.044715", "th *= GELU_C * 0.044715 * {f}",
      "GELU's 0.044715, forward only"),
    P("attn_scale", "att *= 1.0 / math.sqrt(HS)", "att *= {f} / math.sqrt(HS)",
      "attention scale 1/sqrt(head size), forward only"),
    P("init_std", "rng.normal(0.0, 0.02 /", "rng.normal(0.0, 0.02 * {f} /", "init std 0.02"),
    P("warmup_iters", '(step + 1) / (hp["warmup_iters"] + 1)', '(step + 1) / (hp["warmup_iters"] * {f} + 1)',
      "warmup length in lr_at's warmup ramp"),
    P("lr_decay_iters", '/ (hp["lr_decay_iters"] - hp["warmup_iters"])',
      '/ (hp["lr_decay_iters"] * {f} - hp["warmup_iters"])', "decay length in lr_at's cosine"),
    P("grad_clip", 'min(1.0, hp["grad_clip"] / (norm + 1e-6))', 'min(1.0, hp["grad_clip"] * {f} / (norm + 1e-6))',
      "clipping threshold"),
    P("clip_eps", "(norm + 1e-6)", "(norm + 1e-6 * {f})", "clipping's 1e-6 (torch's clip_grad_norm_)"),
    P("beta1", "lr, scale, t = float(lr), float(scale), step + 1",
      "lr, scale, t = float(lr), float(scale), step + 1\n    b1 *= {f}", "AdamW beta1"),
    P("beta2", "lr, scale, t = float(lr), float(scale), step + 1",
      "lr, scale, t = float(lr), float(scale), step + 1\n    b2 *= {f}", "AdamW beta2"),
    P("adam_eps", "lr, scale, t = float(lr), float(scale), step + 1",
      "lr, scale, t = float(lr), float(scale), step + 1\n    eps *= {f}", "AdamW eps"),
    P("weight_decay", "lr, scale, t = float(lr), float(scale), step + 1",
      "lr, scale, t = float(lr), float(scale), step + 1\n    decay *= {f}", "AdamW weight decay"),
    P("learning_rate", "lr, scale, t = float(lr), float(scale), step + 1",
      "lr, scale, t = float(lr) * {f}, float(scale), step + 1", "the learning rate AdamW applies"),
    P("temperature", "logits = logits.astype(np.float64) / temperature",
      "logits = logits.astype(np.float64) / (temperature * {f})", "sampling temperature (generate)"),
]
