"""Seeded synthetic tracks: honest backward runners and cheater profiles.

Everything here is pure: randomness comes in as a `numpy.random.Generator`, time as `start_t`
(Unix seconds). A run is simulated on a 1 s ground-truth grid (speed, course, position), then
"recorded" by a device model: correlated GPS error (Gauss-Markov, sigma from the reported
accuracy), dropouts, phone (1 Hz) or watch smart-recording (1-10 s) sampling, device azimuth,
cadence and heart rate. Numbers come from /work/shared/PACE_RULES.md.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from game.track import BoolArray, FloatArray, Track

IntArray = npt.NDArray[np.int64]

EARTH_RADIUS_M = 6_371_008.8
#: 68% radius of a 2-D Gaussian is 1.51 sigma per axis.
_ACC_TO_SIGMA = 1.0 / 1.51
_CHUNK = 128

#: Backward records (review column of PACE_RULES.md): distance m -> speed m/s.
_RECORD_D_M = np.array([100.0, 200, 400, 800, 1609, 5000, 10000, 21097, 42195])
_RECORD_MPS = np.array([7.59, 6.59, 5.75, 5.33, 4.88, 4.36, 4.29, 3.67, 3.42])


class Level(enum.StrEnum):
    WALKER = "walker"  # backward walking, below the 1.63 m/s walk-to-run switch
    RECREATIONAL = "recreational"  # 1.8-3.0 m/s
    TRAINED = "trained"  # 3.5-4.3 m/s, kept below the record at the distance


class Device(enum.StrEnum):
    PHONE = "phone"  # 1 Hz, accuracy, device azimuth, Doppler speed and course
    WATCH = "watch"  # smart recording 1-10 s, no accuracy or azimuth (like a GPX export)


class Profile(enum.StrEnum):
    HONEST_WALKER = "honest_walker"
    HONEST_RECREATIONAL = "honest_recreational"
    HONEST_TRAINED = "honest_trained"
    CAR = "car"
    BIKE = "bike"
    TELEPORT = "teleport"
    SIMULATOR = "simulator"
    FORWARD_RUNNER = "forward_runner"
    FUTURE_TIMESTAMPS = "future_timestamps"
    REPLAY = "replay"
    MOCK_LOCATION = "mock_location"


HONEST_PROFILES = (Profile.HONEST_WALKER, Profile.HONEST_RECREATIONAL, Profile.HONEST_TRAINED)
CHEATER_PROFILES = tuple(p for p in Profile if p not in HONEST_PROFILES)


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the checks should say about a profile: allowed statuses, and codes (any one)."""

    statuses: frozenset[str]
    codes: frozenset[str]


_CAUGHT = frozenset({"review", "rejected"})
_REJECTED = frozenset({"rejected"})
EXPECTATIONS: dict[Profile, Expectation] = {
    **{p: Expectation(frozenset({"verified", "review"}), frozenset()) for p in HONEST_PROFILES},
    Profile.CAR: Expectation(_REJECTED, frozenset({"vehicle_speed", "superhuman_speed"})),
    Profile.BIKE: Expectation(
        _REJECTED,
        frozenset({"faster_than_world_record", "best_effort_reject", "vehicle_speed"}),
    ),
    Profile.TELEPORT: Expectation(_REJECTED, frozenset({"jump"})),
    Profile.SIMULATOR: Expectation(
        _CAUGHT, frozenset({"no_speed_noise", "no_wobble", "constant_accuracy"})
    ),
    Profile.FORWARD_RUNNER: Expectation(
        _CAUGHT, frozenset({"facing_forward", "partly_facing_forward"})
    ),
    Profile.FUTURE_TIMESTAMPS: Expectation(_REJECTED, frozenset({"future_timestamps"})),
    # A replay has honest kinematics: game.replay catches it, not the pace check.
    Profile.REPLAY: Expectation(frozenset({"verified", "review"}), frozenset({"replayed_track"})),
    Profile.MOCK_LOCATION: Expectation(_CAUGHT, frozenset({"mock_location"})),
}


def expected_codes(profile: Profile) -> frozenset[str]:
    """Flag codes of which at least one must be raised for `profile` (empty for honest runs)."""
    return EXPECTATIONS[profile].codes


@dataclass(frozen=True, slots=True)
class RunnerParams:
    """How an honest runner moves and records; a race simulator streams fixes from these."""

    speed_mps: float  # target (mean) speed
    speed_cv: float  # relative variation of the true speed
    cadence_spm: float  # steps per minute at the target speed
    heading_sd_deg: float  # sway of the body-fixed phone around its mean azimuth
    device: Device
    backward: bool = True


@dataclass(frozen=True, slots=True)
class SyntheticRun:
    """A generated run: the track as uploaded, the server time of the upload, and its source."""

    profile: Profile
    track: Track
    upload_t: float  # `now` to pass to the pace check
    source: Track | None = None  # the original track a replay copies


def record_speed_mps(distance_m: float) -> float:
    """Backward record speed at a distance (log-interpolated from PACE_RULES.md)."""
    return float(np.interp(math.log(max(distance_m, 100.0)), np.log(_RECORD_D_M), _RECORD_MPS))


def runner_params(
    rng: np.random.Generator,
    level: Level = Level.RECREATIONAL,
    *,
    distance_m: float = 5000.0,
    device: Device | None = None,
) -> RunnerParams:
    """Draw an honest backward runner of `level` for a run of `distance_m`."""
    if level is Level.WALKER:
        lo, hi, cad = 0.9, 1.5, rng.uniform(100, 130)
    elif level is Level.RECREATIONAL:
        lo, hi, cad = 1.8, 3.0, rng.uniform(168, 188)
    else:
        # Holding 4.3 m/s over a half marathon would beat the record: stay 5% below it.
        hi = min(4.3, 0.95 * record_speed_mps(distance_m))
        lo, cad = min(3.5, 0.9 * hi), rng.uniform(180, 200)
    if device is None:
        device = Device.PHONE if rng.random() < 0.7 else Device.WATCH
    return RunnerParams(
        speed_mps=float(rng.uniform(lo, hi)),
        speed_cv=float(rng.uniform(0.06, 0.12)),
        cadence_spm=float(cad),
        heading_sd_deg=float(rng.uniform(12, 25)),
        device=device,
    )


def _ar1(rng: np.random.Generator, n: int, tau_s: float, cols: int = 1) -> FloatArray:
    """Unit-variance Gauss-Markov series at 1 s steps, shape (n, cols), vectorised by chunks."""
    phi = math.exp(-1.0 / max(tau_s, 1.0))
    w = rng.standard_normal((n, cols)) * math.sqrt(1.0 - phi * phi)
    w[0] = rng.standard_normal(cols)  # start in the stationary distribution
    out = np.empty((n, cols))
    prev = np.zeros(cols)
    for a in range(0, n, _CHUNK):
        seg = w[a : a + _CHUNK]
        p = phi ** np.arange(1, seg.shape[0] + 1)[:, None]
        # e[k] = phi^(k+1) prev + sum_j<=k phi^(k-j) w[j]
        out[a : a + seg.shape[0]] = p * (prev + np.cumsum(seg / p, axis=0))
        prev = out[a + seg.shape[0] - 1]
    return out


def _runner_speed(
    rng: np.random.Generator, speed_mps: float, cv: float, distance_m: float, stops: bool = True
) -> FloatArray:
    """True per-second speed covering `distance_m`: correlated wander, drift, a few stops."""
    n = int(distance_m / speed_mps * 1.5) + 120
    drift = rng.uniform(-0.06, 0.04) * np.linspace(-0.5, 0.5, n)
    rel = 1.0 + cv * _ar1(rng, n, rng.uniform(20, 60))[:, 0] + drift
    rel += 0.3 * cv * rng.standard_normal(n)
    v = speed_mps * np.clip(rel, 0.3, 1.8)
    if stops:
        for _ in range(rng.poisson(distance_m / 5000.0)):  # a crossing, a shoelace
            a = int(rng.integers(30, max(31, n // 2)))
            v[a : a + int(rng.integers(4, 20))] = rng.uniform(0.0, 0.3)
    return v[: int(np.searchsorted(np.cumsum(v), distance_m)) + 1]


def _route(
    rng: np.random.Generator, speed_mps: FloatArray, wander: bool = True
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Course and east/north metres along a route of straight legs joined by rounded turns."""
    s = np.cumsum(speed_mps)
    total = float(s[-1]) + 1.0
    starts = np.cumsum(rng.uniform(80, 600, size=int(total / 80) + 2))
    starts = starts[starts < total]
    k = starts.shape[0]
    angles = rng.uniform(20, 120, size=k) * rng.choice([-1.0, 1.0], size=k)
    angles[rng.random(k) < 0.05] = 180.0  # out and back
    after = np.cumsum(angles)
    knots = np.column_stack([starts, starts + rng.uniform(5, 25, size=k)]).reshape(-1)
    values = np.column_stack([after - angles, after]).reshape(-1)
    course = rng.uniform(0, 360) + (np.interp(s, knots, values) if k else np.zeros(s.shape))
    if wander:
        course = course + 3.0 * _ar1(rng, s.shape[0], 60.0)[:, 0]
    rad = np.radians(course)
    x = np.cumsum(speed_mps * np.sin(rad))
    y = np.cumsum(speed_mps * np.cos(rad))
    return np.mod(course, 360.0), x, y


@dataclass(frozen=True, slots=True)
class _Truth:
    """Ground truth on a 1 s grid: speed, course, east/north metres, seconds in a vehicle."""

    speed_mps: FloatArray
    course_deg: FloatArray
    x_m: FloatArray
    y_m: FloatArray
    vehicle: BoolArray


def _truth(
    rng: np.random.Generator,
    speed_mps: FloatArray,
    vehicle: BoolArray | None = None,
    wander: bool = True,
) -> _Truth:
    course, x, y = _route(rng, speed_mps, wander)
    veh = np.zeros(speed_mps.shape[0], dtype=np.bool_) if vehicle is None else vehicle
    return _Truth(speed_mps, course, x, y, veh)


_WATCH_STEP_P = np.array([0.1, 0.05, 0.05, 0.1, 0.15, 0.15, 0.15, 0.1, 0.1, 0.05])


def _sample(rng: np.random.Generator, n: int, device: Device, dropouts: bool) -> IntArray:
    """Indices of the seconds the device records: 1 Hz or smart recording, minus dropouts."""
    keep = np.zeros(n, dtype=np.bool_)
    if device is Device.PHONE:
        keep[:] = True
    else:
        pos = np.cumsum(rng.choice(np.arange(1, 11), size=n // 3 + 2, p=_WATCH_STEP_P))
        keep[pos[pos < n]] = True
    if dropouts and n > 40:
        for _ in range(rng.poisson(n / 2000.0)):
            a = int(rng.integers(10, n - 10))
            keep[a : a + int(rng.integers(8, 45))] = False
        if rng.random() < 0.1:  # a tunnel: a signal break
            a = int(rng.integers(10, n - 10))
            keep[a : a + int(rng.integers(60, 150))] = False
    keep[0] = keep[-1] = True
    return np.flatnonzero(keep).astype(np.int64)


def _wrap(deg: FloatArray) -> FloatArray:
    return np.mod(deg, 360.0)


def _render(
    rng: np.random.Generator,
    start_t: float,
    truth: _Truth,
    params: RunnerParams,
    *,
    noise: bool = True,
) -> Track:
    """Record the ground truth with a device: GPS error, accuracy, sampling and sensors."""
    n = truth.speed_mps.shape[0]
    lat0, lon0 = rng.uniform(-55, 60), rng.uniform(-170, 170)
    if noise:
        acc = rng.uniform(3.5, 8.0) * np.exp(0.25 * _ar1(rng, n, 120.0)[:, 0])
        for _ in range(rng.poisson(n / 1800.0)):  # an urban canyon
            a = int(rng.integers(0, n))
            acc[a : a + int(rng.integers(30, 180))] *= rng.uniform(1.3, 2.0)
        acc = np.round(np.clip(acc, 3.0, 15.0), 0 if rng.random() < 0.3 else 1)
        sigma_m = acc * _ACC_TO_SIGMA * rng.uniform(0.5, 0.9)
        err = _ar1(rng, n, rng.uniform(30, 120), 2) * sigma_m[:, None]
        err += rng.uniform(0.2, 0.6) * rng.standard_normal((n, 2))
        if n > 20 and rng.random() < 0.15:  # one multipath spike
            i, ang = int(rng.integers(5, n - 5)), rng.uniform(0, 2 * np.pi)
            err[i] += rng.uniform(30, 80) * np.array([np.sin(ang), np.cos(ang)])
    else:
        acc = np.full(n, float(rng.choice([3.0, 5.0, 10.0])))
        err = np.zeros((n, 2))
    idx = _sample(rng, n, params.device, dropouts=noise)
    m = idx.shape[0]
    x, y = truth.x_m[idx] + err[idx, 0], truth.y_m[idx] + err[idx, 1]
    lat = lat0 + np.degrees(y / EARTH_RADIUS_M)
    lon = lon0 + np.degrees(x / (EARTH_RADIUS_M * math.cos(math.radians(lat0))))
    t = start_t + idx.astype(np.float64)
    v, course, veh = truth.speed_mps[idx], truth.course_deg[idx], truth.vehicle[idx]
    if not noise:  # a simulator: exact values, no body sensors
        return Track.from_arrays(t, lat, lon, acc_m=acc[idx], speed_mps=v, course_deg=course)
    if params.device is Device.PHONE:
        t = np.round(t + rng.uniform(-0.05, 0.05, m), 3)
    cadence = params.cadence_spm * (np.maximum(v, 0.01) / params.speed_mps) ** 0.35
    cadence = np.where((v < 0.5) | veh, 0.0, np.round(cadence + 2.0 * rng.standard_normal(m)))
    hr = np.round(100 + 45 * min(params.speed_mps / 4.3, 1.0) + 8 * _ar1(rng, m, 60.0)[:, 0])
    ele = rng.uniform(0, 300) + 8 * _ar1(rng, m, 300.0)[:, 0]
    if params.device is Device.WATCH:
        return Track.from_arrays(t, lat, lon, cadence_spm=cadence, hr_bpm=hr, ele_m=ele)
    course_acc = np.clip(15.0 / np.maximum(v, 0.2), 4.0, 180.0)
    facing = 180.0 if params.backward else 0.0
    sway = params.heading_sd_deg * _ar1(rng, m, 4.0)[:, 0]
    glance = _ar1(rng, m, 8.0)[:, 0] > 1.75  # ~4% of the time: a look over the shoulder
    sway[glance] += rng.choice([-1.0, 1.0]) * rng.uniform(70, 130)
    heading = np.where(veh, course + rng.uniform(-40, 40), course + facing + sway)
    return Track.from_arrays(
        t,
        lat,
        lon,
        acc_m=acc[idx],
        speed_mps=np.round(np.maximum(v + 0.15 * rng.standard_normal(m), 0.0), 2),
        course_deg=_wrap(course + course_acc / 1.5 * rng.standard_normal(m)),
        course_acc_deg=np.round(course_acc, 1),
        heading_deg=_wrap(heading),
        cadence_spm=cadence,
        hr_bpm=hr,
        ele_m=ele,
    )


def honest_track(
    params: RunnerParams, rng: np.random.Generator, start_t: float, distance_m: float
) -> Track:
    """An honest run of `distance_m` by a runner with `params`, starting at `start_t`."""
    v = _runner_speed(rng, params.speed_mps, params.speed_cv, distance_m)
    return _render(rng, start_t, _truth(rng, v), params)


def _finish(profile: Profile, track: Track, source: Track | None = None) -> SyntheticRun:
    return SyntheticRun(profile, track, float(np.nanmax(track.t)) + 60.0, source)


def _honest(level: Level) -> Callable[[np.random.Generator, float, float], SyntheticRun]:
    profile = Profile(f"honest_{level.value}")

    def build(rng: np.random.Generator, start_t: float, distance_m: float) -> SyntheticRun:
        params = runner_params(rng, level, distance_m=distance_m)
        return _finish(profile, honest_track(params, rng, start_t, distance_m))

    return build


def _car(rng: np.random.Generator, start_t: float, distance_m: float) -> SyntheticRun:
    """Runs, gets in a car for 1.5-4 km at 10-20 m/s, gets out and runs on."""
    params = runner_params(rng, Level.RECREATIONAL, device=Device.PHONE)
    car_m = rng.uniform(1500, 4000)
    run_m = max(distance_m - car_m, 600.0)
    a = _runner_speed(rng, params.speed_mps, params.speed_cv, run_m * 0.5)
    b = _runner_speed(rng, params.speed_mps, params.speed_cv, run_m * 0.5)
    n_car = int(car_m / 15.0)
    ramp = np.minimum(1.0, np.minimum(np.arange(n_car), np.arange(n_car)[::-1]) / 6.0)
    car = ramp * rng.uniform(10, 20) * (1 + 0.1 * _ar1(rng, n_car, 20.0)[:, 0])
    v = np.concatenate([a, np.maximum(car, 0.5), b])
    veh = np.zeros(v.shape[0], dtype=np.bool_)
    veh[a.shape[0] : a.shape[0] + n_car] = True
    return _finish(Profile.CAR, _render(rng, start_t, _truth(rng, v, veh), params))


def _bike(rng: np.random.Generator, start_t: float, distance_m: float) -> SyntheticRun:
    """Rides the whole way at 6-8 m/s; the pedometer counts pedal strokes (60-90 spm)."""
    speed = float(rng.uniform(6, 8))
    params = RunnerParams(speed, 0.12, float(rng.uniform(60, 90)), 15.0, Device.PHONE, False)
    v = _runner_speed(rng, speed, params.speed_cv, distance_m, stops=False)
    return _finish(Profile.BIKE, _render(rng, start_t, _truth(rng, v), params))


def _teleport(rng: np.random.Generator, start_t: float, distance_m: float) -> SyntheticRun:
    """An honest run that jumps 1.5-5 km somewhere in the middle and carries on from there."""
    params = runner_params(rng, Level.RECREATIONAL, device=Device.PHONE)
    v = _runner_speed(rng, params.speed_mps, params.speed_cv, distance_m)
    truth = _truth(rng, v)
    i = int(rng.integers(v.shape[0] // 4, 3 * v.shape[0] // 4))
    d, ang = rng.uniform(1500, 5000), rng.uniform(0, 2 * np.pi)
    x, y = truth.x_m.copy(), truth.y_m.copy()
    x[i:] += d * np.sin(ang)
    y[i:] += d * np.cos(ang)
    truth = _Truth(truth.speed_mps, truth.course_deg, x, y, truth.vehicle)
    return _finish(Profile.TELEPORT, _render(rng, start_t, truth, params))


def _simulator(rng: np.random.Generator, start_t: float, distance_m: float) -> SyntheticRun:
    """A GPS simulator: constant speed, sharp turns, no noise, constant accuracy."""
    speed = float(rng.uniform(2.2, 3.5))
    params = RunnerParams(speed, 0.0, 0.0, 0.0, Device.PHONE)
    v = np.full(int(distance_m / speed) + 1, speed)
    truth = _truth(rng, v, wander=False)
    return _finish(Profile.SIMULATOR, _render(rng, start_t, truth, params, noise=False))


def _forward(rng: np.random.Generator, start_t: float, distance_m: float) -> SyntheticRun:
    """Runs forward at forward pace (3.4-4.6 m/s, long strides), phone facing the course."""
    speed = float(rng.uniform(3.4, 4.6))
    params = RunnerParams(
        speed, 0.08, float(rng.uniform(155, 175)), 15.0, Device.PHONE, backward=False
    )
    return _finish(Profile.FORWARD_RUNNER, honest_track(params, rng, start_t, distance_m))


def _future(rng: np.random.Generator, start_t: float, distance_m: float) -> SyntheticRun:
    """An honest run whose clock is 1-48 h ahead of the server."""
    params = runner_params(rng, Level.RECREATIONAL)
    track = honest_track(params, rng, start_t, distance_m)
    upload_t = float(np.nanmax(track.t)) + 60.0
    shifted = replace(track, t=track.t + rng.uniform(3600, 48 * 3600))
    return SyntheticRun(Profile.FUTURE_TIMESTAMPS, shifted, upload_t)


def _replay(rng: np.random.Generator, start_t: float, distance_m: float) -> SyntheticRun:
    """Someone else's run from 1-60 days ago, shifted to `start_t` with sub-metre noise."""
    params = runner_params(rng, Level.RECREATIONAL)
    source = honest_track(params, rng, start_t - rng.uniform(1, 60) * 86400.0, distance_m)
    m = len(source)
    noise_m = rng.uniform(0.3, 1.0) * rng.standard_normal((m, 2))
    lat = source.lat + np.degrees(noise_m[:, 1] / EARTH_RADIUS_M)
    lon = source.lon + np.degrees(noise_m[:, 0] / (EARTH_RADIUS_M * np.cos(np.radians(source.lat))))
    copy = replace(source, t=source.t - source.t[0] + start_t, lat=lat, lon=lon)
    return _finish(Profile.REPLAY, copy, source)


def _mock(rng: np.random.Generator, start_t: float, distance_m: float) -> SyntheticRun:
    """An honest-looking run whose fixes the OS marks as mock locations."""
    params = runner_params(rng, Level.RECREATIONAL, device=Device.PHONE)
    track = honest_track(params, rng, start_t, distance_m)
    return _finish(Profile.MOCK_LOCATION, replace(track, mock=np.ones(len(track), np.bool_)))


Builder = Callable[[np.random.Generator, float, float], SyntheticRun]

PROFILES: dict[Profile, Builder] = {
    Profile.HONEST_WALKER: _honest(Level.WALKER),
    Profile.HONEST_RECREATIONAL: _honest(Level.RECREATIONAL),
    Profile.HONEST_TRAINED: _honest(Level.TRAINED),
    Profile.CAR: _car,
    Profile.BIKE: _bike,
    Profile.TELEPORT: _teleport,
    Profile.SIMULATOR: _simulator,
    Profile.FORWARD_RUNNER: _forward,
    Profile.FUTURE_TIMESTAMPS: _future,
    Profile.REPLAY: _replay,
    Profile.MOCK_LOCATION: _mock,
}


def generate_run(
    profile: Profile,
    rng: np.random.Generator | int,
    start_t: float,
    distance_m: float = 5000.0,
) -> SyntheticRun:
    """Generate a run of `profile` (a seed or a generator), with its upload time and source."""
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return PROFILES[profile](gen, start_t, distance_m)


def generate(
    profile: Profile,
    rng: np.random.Generator | int,
    start_t: float,
    distance_m: float = 5000.0,
) -> Track:
    """Generate the track of a run of `profile`, starting at `start_t` (Unix seconds)."""
    return generate_run(profile, rng, start_t, distance_m).track
