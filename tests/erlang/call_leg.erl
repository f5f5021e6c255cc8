%% A call leg for the erlang playbook's OTP-way tests: a gen_server with live state that counts
%% the media frames it receives. Version 1 keeps its state as a tuple; version 2 as a map, with
%% a code_change/3 that converts it both ways: a version 2 handle_info given a version 1 tuple
%% crashes, so a patch that loads version 2 without code_change kills every leg.
%%
%% One source, every version: erlc -DVSN='"2"' -DSHAPE=map call_leg.erl. -DCRASH builds a
%% code_change that crashes.
-module(call_leg).
-behaviour(gen_server).
-vsn(?VSN).
-export([start_link/2, init/1, handle_call/3, handle_cast/2, handle_info/2, code_change/3]).

start_link(Id, Tick) -> gen_server:start_link(?MODULE, {Id, Tick}, []).

-ifdef(SHAPE).
%% Version 2: a map, and the frame counter goes through call_media (a module of the same patch).
init({Id, Tick}) -> tick(Tick), {ok, #{id => Id, tick => Tick, frames => 0}}.
handle_info(frame, #{tick := Tick, frames := N} = S) -> tick(Tick), {noreply, S#{frames := call_media:count(N)}}.
handle_call(state, _, #{id := Id, frames := N} = S) -> {reply, {?VSN, map, Id, N}, S}.
-ifdef(CRASH).
code_change(_, _, _) -> error(cannot_convert).
-else.
code_change({down, _}, #{id := Id, tick := Tick, frames := N}, _) -> {ok, {leg, Id, Tick, N}};
code_change(_, {leg, Id, Tick, N}, _) -> {ok, #{id => Id, tick => Tick, frames => N}}.
-endif.
-else.
init({Id, Tick}) -> tick(Tick), {ok, {leg, Id, Tick, 0}}.
handle_info(frame, {leg, Id, Tick, N}) -> tick(Tick), {noreply, {leg, Id, Tick, N + 1}}.
handle_call(state, _, {leg, Id, _, N} = S) -> {reply, {?VSN, tuple, Id, N}, S}.
code_change(_, S, _) -> {ok, S}.
-endif.

handle_cast(_, S) -> {noreply, S}.

tick(infinity) -> ok;
tick(Ms) -> erlang:send_after(Ms, self(), frame).
