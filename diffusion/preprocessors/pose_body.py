"""The openpose body's people from its network's maps, in numpy as controlnet_aux's
`open_pose.body.Body` finds them (CMU's algorithm, as lllyasviel's annotator keeps it):

1. each joint's peaks: local maxima of its heatmap smoothed by a Gaussian (sigma 3) above 0.1;
2. each limb's candidate pairs of peaks, scored by the part affinity field sampled at ten
   points between them (its mean projection on the limb, less a penalty for limbs longer than
   half the picture), kept where 80 % of the samples pass 0.05; the best pairs taken greedily;
3. people assembled limb by limb: a pair joins the person holding one of its peaks, two
   people sharing none are merged, a pair of nobody's starts a person; people with fewer
   than 4 joints or a mean score under 0.4 dropped.

    peaks, people = find_people(heatmaps, pafs)   # float HxWx19, HxWx38 at the picture's size
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["LIMBS", "find_people", "gaussian_filter"]

# joints (1-based) each limb joins, and the two part affinity field channels of each
LIMBS = ((2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12),
         (12, 13), (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18), (3, 17), (6, 18))
_FIELDS = ((12, 13), (20, 21), (14, 15), (16, 17), (22, 23), (24, 25), (0, 1), (2, 3), (4, 5),
           (6, 7), (8, 9), (10, 11), (28, 29), (30, 31), (34, 35), (32, 33), (36, 37), (18, 19),
           (26, 27))
_PEAK_THRESHOLD = 0.1
_FIELD_THRESHOLD = 0.05
_SAMPLES = 10


def gaussian_filter(x: np.ndarray, sigma: float) -> np.ndarray:
    """scipy.ndimage.gaussian_filter of a 2-D float64 map (radius 4 sigma, edges mirrored
    about the edge pixels' outer sides, as its mode "reflect")."""
    radius = int(4.0 * sigma + 0.5)
    taps = np.exp(-0.5 / sigma ** 2 * np.arange(-radius, radius + 1) ** 2)
    taps /= taps.sum()
    out = np.asarray(x, np.float64)
    for axis in (0, 1):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)],
                        mode="symmetric")
        size = out.shape[axis]
        out = sum(taps[i] * padded.take(np.arange(i, i + size), axis=axis)
                  for i in range(2 * radius + 1))
    return out


def _peaks(heatmaps: np.ndarray) -> list[list[tuple[int, int, float, int]]]:
    """Each of the 18 joints' peaks: (x, y, score, id), ids counted over all joints."""
    found: list[list[tuple[int, int, float, int]]] = []
    counter = 0
    for part in range(18):
        heat = heatmaps[:, :, part]
        smooth = gaussian_filter(heat, sigma=3)
        shifted = np.zeros((4, *smooth.shape))  # the neighbours; zeros past the edges
        shifted[0, 1:, :] = smooth[:-1, :]
        shifted[1, :-1, :] = smooth[1:, :]
        shifted[2, :, 1:] = smooth[:, :-1]
        shifted[3, :, :-1] = smooth[:, 1:]
        peak = (smooth >= shifted).all(axis=0) & (smooth > _PEAK_THRESHOLD)
        ys, xs = np.nonzero(peak)
        found.append([(int(x), int(y), float(heat[y, x]), counter + i)
                      for i, (x, y) in enumerate(zip(xs, ys))])
        counter += len(xs)
    return found


def _connections(peaks: list[list[tuple[int, int, float, int]]], pafs: np.ndarray,
                 height: int) -> list[np.ndarray | None]:
    """Each limb's chosen pairs: rows (id A, id B, score, index in A, index in B); None
    where one of its joints has no peak."""
    out: list[np.ndarray | None] = []
    for (a, b), fields in zip(LIMBS, _FIELDS):
        cand_a, cand_b = peaks[a - 1], peaks[b - 1]
        if not cand_a or not cand_b:
            out.append(None)
            continue
        field = pafs[:, :, list(fields)]
        scored = []
        for i, pa in enumerate(cand_a):
            for j, pb in enumerate(cand_b):
                vec = np.subtract(pb[:2], pa[:2])
                norm = max(0.001, math.sqrt(vec[0] * vec[0] + vec[1] * vec[1]))
                vec = np.divide(vec, norm)
                xs = np.linspace(pa[0], pb[0], num=_SAMPLES)
                ys = np.linspace(pa[1], pb[1], num=_SAMPLES)
                samples = field[np.rint(ys).astype(int), np.rint(xs).astype(int)]
                along = np.multiply(samples[:, 0], vec[0]) + np.multiply(samples[:, 1], vec[1])
                score = sum(along) / len(along) + min(0.5 * height / norm - 1, 0)
                if (len(np.nonzero(along > _FIELD_THRESHOLD)[0]) > 0.8 * len(along)
                        and score > 0):
                    scored.append([i, j, score, score + pa[2] + pb[2]])
        scored.sort(key=lambda row: row[2], reverse=True)
        chosen = np.zeros((0, 5))
        for i, j, score, _ in scored:
            if i not in chosen[:, 3] and j not in chosen[:, 4]:
                chosen = np.vstack([chosen, [cand_a[i][3], cand_b[j][3], score, i, j]])
                if len(chosen) >= min(len(cand_a), len(cand_b)):
                    break
        out.append(chosen)
    return out


def find_people(heatmaps: np.ndarray, pafs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(candidates [K, 4]: x, y, score, id of every peak; people [P, 20]: each joint's
    candidate index or -1, then the total score and the number of joints) from the body
    network's heatmaps (HxWx19) and part affinity fields (HxWx38) at the picture's size.
    controlnet_aux: `Body.__call__` after the network."""
    peaks = _peaks(heatmaps)
    connections = _connections(peaks, pafs, heatmaps.shape[0])
    candidates = np.array([peak for joint in peaks for peak in joint])
    people = -1 * np.ones((0, 20))
    for k, ((a, b), chosen) in enumerate(zip(LIMBS, connections)):
        if chosen is None:
            continue
        index_a, index_b = a - 1, b - 1
        for i in range(len(chosen)):
            part_a, part_b = chosen[i, 0], chosen[i, 1]
            holders = [j for j in range(len(people))
                       if people[j][index_a] == part_a or people[j][index_b] == part_b][:2]
            if len(holders) == 1 or (len(holders) == 2 and np.nonzero(
                    ((people[holders[0]] >= 0).astype(int)
                     + (people[holders[1]] >= 0).astype(int))[:-2] == 2)[0].size):
                j = holders[0]
                if len(holders) == 2 or people[j][index_b] != part_b:
                    people[j][index_b] = part_b
                    people[j][-1] += 1
                    people[j][-2] += candidates[int(part_b), 2] + chosen[i][2]
            elif len(holders) == 2:  # two people sharing no joint: one person
                j1, j2 = holders
                people[j1][:-2] += people[j2][:-2] + 1
                people[j1][-2:] += people[j2][-2:]
                people[j1][-2] += chosen[i][2]
                people = np.delete(people, j2, 0)
            elif k < 17:
                row = -1 * np.ones(20)
                row[index_a], row[index_b] = part_a, part_b
                row[-1] = 2
                row[-2] = sum(candidates[chosen[i, :2].astype(int), 2]) + chosen[i][2]
                people = np.vstack([people, row])
    keep = [i for i in range(len(people))
            if not (people[i][-1] < 4 or people[i][-2] / people[i][-1] < 0.4)]
    return candidates, people[keep]
