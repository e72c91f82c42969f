"""An independent NumPy model of the game methods, for step-by-step checks.

It knows nothing of Keras: the bilinear game's field is written out by hand,
and SGDA / SE / SVRE (plain, Adam and VRAd steps, restarts from the average,
one-minibatch variant, both update points) follow the paper's Algorithm 1 and
METHOD.md; OGDA and optimistic Adam follow Daskalakis et al. (2018),
`w <- w - lr * (2 s_t - s_{t-1})` with `s_0 = 0`; alternating updates
(`run_alternating`) step y `n_dis` times, then x once. The restart draws
reproduce `Game.draw_uniform`: uniform numbers from
`np.random.default_rng([seed, counter])`.

SVRE's coefficient on the correction (`SVRE(vr_coefficient=...)`):
`d = F_i(w) - alpha (F_i(w_S) - mu_S)` with alpha a number, a function of
the iterations applied so far (a schedule), or `"optimal"`: per variable
tensor (`segments`), `clip(C / V, 0, alpha_max)` from running averages of
`<F_i(w) - mu_S, F_i(w_S) - mu_S>` and `||F_i(w_S) - mu_S||^2`, fed after
each iteration by the mean over its two paired evaluations, and `min(1,
alpha_max)` while V is 0. At a snapshot C (and U, the running average of
`||F_i(w) - mu_S||^2`) restart at V, unless the statistics are kept.
"""

import numpy as np


class BilinearField:
    """F_i for `f_i(x, y) = x_i y_i + a_i.x + b_i.y`; x minimises, y maximises."""

    def __init__(self, a, b):
        self.a, self.b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        self.dim = self.a.shape[1]

    def __call__(self, batch, x, y):
        gx, gy = np.zeros(self.dim), np.zeros(self.dim)
        for i in batch:
            gx[i] += y[i]
            gy[i] -= x[i]
            gx += self.a[i]
            gy -= self.b[i]
        return gx / len(batch), gy / len(batch)

    def mean(self, x, y):
        return self(range(self.dim), x, y)


def numpy_step(rule, d, m, v, t, beta_1=0.9, beta_2=0.999, eps=1e-8):
    """The step of a rule at count t from moments (m, v); returns (step, m, v).

    Adam as in Kingma & Ba (2015), Algorithm 1; VRAd rescales the direction
    itself by Adam's ratio |m_hat| / (sqrt(v_hat) + eps).
    """
    if rule is None:
        return d, m, v
    m = beta_1 * m + (1.0 - beta_1) * d
    v = beta_2 * v + (1.0 - beta_2) * d * d
    m_hat = m / (1.0 - beta_1**t)
    v_hat = v / (1.0 - beta_2**t)
    ratio = 1.0 / (np.sqrt(v_hat) + eps)
    if rule == "adam":
        return m_hat * ratio, m, v
    return d * np.abs(m_hat) * ratio, m, v


class StepRule:
    """w <- w - lr * step(d) with plain, Adam or VRAd steps."""

    def __init__(self, lr, adaptive=None, beta_1=0.9, beta_2=0.999, eps=1e-8, size=0):
        self.lr, self.adaptive = lr, adaptive
        self.b1, self.b2, self.eps = beta_1, beta_2, eps
        self.m, self.v, self.t = np.zeros(size), np.zeros(size), 0

    def step(self, d, commit):
        if self.adaptive is None:
            return self.lr * d
        step, m, v = numpy_step(
            self.adaptive, d, self.m, self.v, self.t + 1, self.b1, self.b2, self.eps
        )
        if commit:
            self.m, self.v, self.t = m, v, self.t + 1
        return self.lr * step


def run(
    field,
    x0,
    y0,
    minibatches,
    method,
    lr,
    *,
    adaptive=None,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-8,
    restart_probability=None,
    average_restart_probability=0.0,
    seed=0,
    update_point="extrapolated",
    one_minibatch=False,
    vr_coefficient=1.0,
    vr_statistics_decay=0.9,
    vr_statistics_reset=True,
    vr_coefficient_max=1.0,
    restart_correlation=None,
    segments=None,
):
    """Runs a method over `minibatches` (a list of index lists) and returns (x, y, info).

    SGDA and OGDA take one minibatch per iteration; SE and SVRE take two
    (i, j), or one with `one_minibatch`. OGDA with `adaptive="adam"` is
    optimistic Adam. For SVRE, `vr_coefficient` is a number, a function of
    the iteration count or `"optimal"`; `segments` are the sizes of the
    variable tensors in `concat(x0, y0)` (default: x and y), over which
    `"optimal"` keeps its statistics. `info["trajectory"]` lists, after each
    SVRE iteration (and its snapshot draw), `(w, alpha, C, V)`: the point,
    the coefficients the iteration used, and the statistics after it. With
    `restart_correlation`, a snapshot follows an iteration when the pooled
    correlation `sqrt(sum max(C, 0)^2 / V / sum U)` (U: running average of
    `||F_i(w) - mu_S||^2`) is below it, instead of a draw.
    """
    d = len(x0)
    w = np.concatenate([x0, y0]).astype(np.float64)
    rule = StepRule(lr, adaptive, beta_1, beta_2, epsilon, size=len(w))

    def F(batch, point):
        return np.concatenate(field(batch, point[:d], point[d:]))

    def F_update(batch, half, current):
        if update_point == "extrapolated":
            return F(batch, half)
        gx = F(batch, np.concatenate([current[:d], half[d:]]))[:d]
        gy = F(batch, np.concatenate([half[:d], current[d:]]))[d:]
        return np.concatenate([gx, gy])

    counter = 0

    def draw():
        nonlocal counter
        u = np.random.default_rng([seed, counter]).random()
        counter += 1
        return u

    info = {"snapshots": 0, "restarts": 0, "trajectory": []}
    sizes = [d, len(w) - d] if segments is None else list(segments)
    assert sum(sizes) == len(w)
    covariance, variance = np.zeros(len(sizes)), np.zeros(len(sizes))
    field_variance = np.zeros(len(sizes))

    def per_segment(values):
        return np.split(values, np.cumsum(sizes)[:-1])

    def coefficients(t):
        """alpha per segment for the iteration after `t` applied ones."""
        if vr_coefficient == "optimal":
            known = variance > 0
            ratio = covariance / np.where(known, variance, 1.0)
            return np.where(
                known,
                np.clip(ratio, 0.0, vr_coefficient_max),
                min(1.0, vr_coefficient_max),
            )
        if callable(vr_coefficient):
            return np.full(len(sizes), float(vr_coefficient(t)))
        return np.full(len(sizes), float(vr_coefficient))

    def corrected(g, g_snap, alpha):
        if vr_coefficient == 1.0 and not callable(vr_coefficient):
            return g - g_snap + mu
        return g - np.repeat(alpha, sizes) * (g_snap - mu)

    def record(pairs):
        nonlocal covariance, variance, field_variance
        c, v, u = np.zeros(len(sizes)), np.zeros(len(sizes)), np.zeros(len(sizes))
        for g, g_snap in pairs:
            # e = F_i(w_S) - mu_S, f = F_i(w) - mu_S (C is centred on mu_S).
            for s, (e_k, f_k) in enumerate(
                zip(per_segment(g_snap - mu), per_segment(g - mu), strict=True)
            ):
                c[s] += np.sum(f_k * e_k)
                v[s] += np.sum(e_k * e_k)
                u[s] += np.sum(f_k * f_k)
        decay = vr_statistics_decay
        covariance = decay * covariance + (1.0 - decay) * (c / len(pairs))
        variance = decay * variance + (1.0 - decay) * (v / len(pairs))
        field_variance = decay * field_variance + (1.0 - decay) * (u / len(pairs))

    def correlation_low():
        known = variance > 0
        total = np.sum(field_variance)
        if not known.any() or not total > 0:
            return False
        c = np.maximum(covariance[known], 0.0)
        return np.sqrt(np.sum(c * c / variance[known]) / total) < restart_correlation

    def take_snapshot():
        nonlocal w_s, mu, covariance, variance, field_variance
        w_s = w.copy()
        mu = np.concatenate(field.mean(w_s[:d], w_s[d:]))
        if vr_statistics_reset:
            # C and U restart at V (alpha = 1); V keeps its weight.
            covariance, field_variance = variance.copy(), variance.copy()
        info["snapshots"] += 1

    w_s = mu = None
    if method == "svre":
        take_snapshot()
        average, count = w.copy(), 1
    previous_step = np.zeros_like(w)  # OGDA's s_{t-1} (times lr), s_0 = 0.
    k = 1 if method in ("sgda", "ogda") or one_minibatch else 2
    for start in range(0, len(minibatches) - k + 1, k):
        i = minibatches[start]
        j = minibatches[start + k - 1]
        if method == "sgda":
            w = w - rule.step(F(i, w), commit=True)
            continue
        if method == "ogda":
            step = rule.step(F(i, w), commit=True)
            w = w - (2.0 * step - previous_step)
            previous_step = step
            continue
        if method == "se":
            half = w - rule.step(F(i, w), commit=False)
            w = w - rule.step(F_update(j, half, w), commit=True)
            continue
        alpha = coefficients(start // k)
        g_snap_i = F(i, w_s)
        g_i = F(i, w)
        half = w - rule.step(corrected(g_i, g_snap_i, alpha), commit=False)
        g_snap_j = g_snap_i if one_minibatch else F(j, w_s)
        g_half = F_update(j, half, w)
        w = w - rule.step(corrected(g_half, g_snap_j, alpha), commit=True)
        # After the iteration's directions: alpha used earlier ones only.
        record([(g_i, g_snap_i), (g_half, g_snap_j)])
        count += 1
        average = average + (w - average) / count
        if (
            correlation_low()
            if restart_correlation is not None
            else draw() < restart_probability
        ):
            if average_restart_probability > 0 and draw() < average_restart_probability:
                w = average.copy()
                count = 1
                info["restarts"] += 1
            take_snapshot()
        info["trajectory"].append((w.copy(), alpha, covariance.copy(), variance.copy()))
    info["average"] = (average[:d], average[d:]) if method == "svre" else None
    return w[:d], w[d:], info


def run_alternating(
    field,
    x0,
    y0,
    minibatches,
    n_dis,
    lr_x,
    lr_y,
    *,
    method="sgda",
    adaptive=None,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-8,
):
    """Alternating updates over `minibatches`; returns (x, y).

    Each iteration: `n_dis` steps of y, each on the next minibatch at the
    current point, then one step of x on the next minibatch at the updated
    y. Each player has its own step rule (its own Adam moments and count);
    `method="ogda"` corrects each player's step by its previous one.
    """
    x, y = np.array(x0, np.float64), np.array(y0, np.float64)
    rules = {
        "x": StepRule(lr_x, adaptive, beta_1, beta_2, epsilon, size=len(x)),
        "y": StepRule(lr_y, adaptive, beta_1, beta_2, epsilon, size=len(y)),
    }
    previous = {"x": np.zeros_like(x), "y": np.zeros_like(y)}

    def move(player, w, gradient):
        step = rules[player].step(gradient, commit=True)
        if method == "ogda":
            step, previous[player] = 2.0 * step - previous[player], step
        return w - step

    k = n_dis + 1
    for start in range(0, len(minibatches) - k + 1, k):
        for batch in minibatches[start : start + n_dis]:
            y = move("y", y, field(batch, x, y)[1])
        x = move("x", x, field(minibatches[start + n_dis], x, y)[0])
    return x, y


def _sigmoid(t):
    return 1.0 / (1.0 + np.exp(-t))


class LinearGANField:
    """F_i of a GAN with a linear generator and a linear discriminator.

    `G(z) = z W + c`, `D(x) = x.u + e`, non-saturating losses
    `L_D = mean softplus(-D(x)) + mean softplus(D(G(z)))`,
    `L_G = mean softplus(-D(G(z)))`, written out by hand. Player x packs the
    generator's (W, c), player y the discriminator's (u, e), in Keras' variable
    order (kernel, bias).

    With `penalty`, the discriminator's loss has a gradient penalty too; D's
    input gradient is u at every image, so WGAN-GP is
    `weight * (||u|| - 1)^2` and R1 `weight / 2 * ||u||^2`, whatever the
    images and interpolation points.
    """

    def __init__(self, images, latents, penalty=None, weight=10.0):
        self.images = np.asarray(images, np.float64)
        self.latents = np.asarray(latents, np.float64)
        self.penalty, self.weight = penalty, weight
        self.k = self.latents.shape[1]
        self.m = self.images.shape[1]

    def unpack(self, x, y):
        W = x[: self.k * self.m].reshape(self.k, self.m)
        c = x[self.k * self.m :]
        u, e = y[: self.m], y[self.m]
        return W, c, u, e

    def __call__(self, batch, x, y):
        batch = np.asarray(batch)
        W, c, u, e = self.unpack(x, y)
        X, Z = self.images[batch], self.latents[batch]
        fake = Z @ W + c
        d_real, d_fake = X @ u + e, fake @ u + e
        n = len(batch)
        # Generator: d/dfake of softplus(-D(fake)) = -sigmoid(-D(fake)) * u.
        dfake = -_sigmoid(-d_fake)[:, None] * u[None, :] / n
        gW, gc = Z.T @ dfake, dfake.sum(axis=0)
        # Discriminator: real term -sigmoid(-D(x)), fake term sigmoid(D(fake)).
        r, f = -_sigmoid(-d_real) / n, _sigmoid(d_fake) / n
        gu = X.T @ r + fake.T @ f
        ge = r.sum() + f.sum()
        if self.penalty == "r1":
            gu = gu + self.weight * u
        elif self.penalty == "wgan-gp":
            norm = np.linalg.norm(u)
            gu = gu + 2.0 * self.weight * (norm - 1.0) * u / norm
        return np.concatenate([gW.ravel(), gc]), np.concatenate([gu, [ge]])

    def mean(self, x, y):
        return self(np.arange(len(self.images)), x, y)
