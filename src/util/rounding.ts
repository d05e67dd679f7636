// Python's round() / numpy's round: halves go to the even neighbour. diffusers' timestep spacing
// and torchvision's center crop both round this way, so our schedules and crops must too.
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}
