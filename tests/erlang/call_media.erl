%% The library a version 2 call leg counts its frames with: count/1 exists from version 2 on,
%% so version 2 of call_leg only works loaded together with version 2 of this module.
-module(call_media).
-vsn(?VSN).
-export([version/0]).
-ifdef(SHAPE).
-export([count/1]).
count(N) -> N + 1.
-endif.

version() -> ?VSN.
