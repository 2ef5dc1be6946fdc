// Row reductions for shaders/nn/attention.wgsl through workgroup memory (adapters without
// subgroups, such as OpenGL): each of the CS invocations sharing rows 4rs..4rs+3 posts its
// vec4, then every one reads all CS of them.
override RED_LEN: u32 = CS * RG;

var<workgroup> red: array<vec4<f32>, RED_LEN>; // [cs][row group]

fn reduce_max(x: vec4<f32>, rs: u32, cs: u32) -> vec4<f32> {
    red[cs * RG + rs] = x;
    workgroupBarrier();
    var m = red[rs];
    for (var i = 1u; i < bound(CS); i++) { m = max(m, red[i * RG + rs]); }
    return m;
}

fn reduce_sum(x: vec4<f32>, rs: u32, cs: u32) -> vec4<f32> {
    red[cs * RG + rs] = x;
    workgroupBarrier();
    var m = red[rs];
    for (var i = 1u; i < bound(CS); i++) { m += red[i * RG + rs]; }
    return m;
}
